package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"hypefs/internal/test9p"
)

// attachEnv makes the test binary, started again (as another user),
// attach to a 9P address and say how it went instead of running tests:
// its value is ADDR,UNAME,N_UNAME. It prints "ok" when it could list the
// root, or what failed: "attach EACCES", "list EACCES".
const attachEnv = "HYPEFS_TEST_9P_ATTACH"

func TestMain(m *testing.M) {
	if spec := os.Getenv(attachEnv); spec != "" {
		fmt.Println(attachChild(spec))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func attachChild(spec string) string {
	f := strings.Split(spec, ",")
	if len(f) != 3 {
		return "bad spec " + spec
	}
	n, _ := strconv.ParseUint(f[2], 10, 32)
	root, closeFn, err := test9p.Attach(f[0], f[1], uint32(n))
	if closeFn != nil {
		defer closeFn()
	}
	if err != nil {
		return "attach " + ninepErrno(err)
	}
	if err := p9read("")(root); err != nil {
		return "list " + ninepErrno(err)
	}
	return "ok"
}
