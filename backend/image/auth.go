package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// A pull runs with the registry credentials of the user who asked for it:
// the one who wrote "pull REF" to images/ctl, or the owner of the
// instance that boots the image. Never root's for someone else.
//
// The credentials are the user's docker config, $HOME/.docker/config.json
// with HOME from the passwd entry: "auths" (auth, username and password,
// identity or registry tokens) and the credential helpers it names
// ("credHelpers", "credsStore"), which run as that user, with that user's
// groups and HOME. The daemon reads the file itself (it is root), so it
// takes it only when the user owns it and nobody else may write it: a
// config another user could write would hand them the user's pulls.

// userKeychain resolves registry credentials as one local user.
type userKeychain struct {
	uid uint32
}

// keychain is the credentials of uid's pulls: the store's own Keychain
// when one was given (tests), else that user's docker config.
func (s *Store) keychain(uid uint32) authn.Keychain {
	if s.opt.Keychain != nil {
		return s.opt.Keychain
	}
	return userKeychain{uid: uid}
}

// dockerConfig is the part of config.json that names credentials.
type dockerConfig struct {
	Auths       map[string]authn.AuthConfig `json:"auths"`
	CredHelpers map[string]string           `json:"credHelpers"`
	CredsStore  string                      `json:"credsStore"`
}

// account is what a pull needs of a local user.
type account struct {
	uid, gid uint32
	groups   []uint32
	home     string
}

func lookupAccount(uid uint32) (account, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return account{}, fmt.Errorf("user %d: %w", uid, err)
	}
	a := account{uid: uid, home: u.HomeDir}
	if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
		a.gid = uint32(g)
	}
	gids, _ := u.GroupIds()
	for _, s := range gids {
		if g, err := strconv.ParseUint(s, 10, 32); err == nil {
			a.groups = append(a.groups, uint32(g))
		}
	}
	return a, nil
}

// Resolve implements authn.Keychain: the user's credentials for the
// registry, or anonymous when the user has none (or no usable config).
func (k userKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	acct, err := lookupAccount(k.uid)
	if err != nil || acct.home == "" {
		return authn.Anonymous, nil
	}
	cfg, err := readDockerConfig(filepath.Join(acct.home, ".docker", "config.json"), k.uid)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return authn.Anonymous, nil
	}
	reg := r.RegistryStr()
	if helper := cfg.CredHelpers[reg]; helper != "" {
		return runHelper(acct, helper, reg)
	}
	for key, ac := range cfg.Auths {
		if configHost(key) == reg {
			return authn.FromConfig(ac), nil
		}
	}
	if cfg.CredsStore != "" {
		return runHelper(acct, cfg.CredsStore, reg)
	}
	return authn.Anonymous, nil
}

// readDockerConfig reads a user's config.json: nil when there is none;
// an error when it is not theirs alone to write, or not JSON.
func readDockerConfig(path string, uid uint32) (*dockerConfig, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid != uid || fi.Mode().Perm()&0o022 != 0 || !fi.Mode().IsRegular() {
		return nil, &credentialsError{fmt.Sprintf("docker config %s is not used: it must be a file owned by uid %d that only its owner may write (hint: chown %d %s; chmod go-w %s)", path, uid, uid, path, path)}
	}
	var cfg dockerConfig
	if err := json.NewDecoder(f).Decode(&cfg); err != nil {
		return nil, &credentialsError{fmt.Sprintf("docker config %s is not valid JSON: %v", path, err)}
	}
	return &cfg, nil
}

// credentialsError is a user's credentials that cannot be used: their
// config or their helper, which they can fix.
type credentialsError struct{ msg string }

func (e *credentialsError) Error() string { return e.msg }

// configHost is the registry a config.json "auths" key names: the key
// without scheme or path ("https://index.docker.io/v1/" is Docker Hub).
func configHost(key string) string {
	h := strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	h, _, _ = strings.Cut(h, "/")
	if h == "docker.io" || h == "registry-1.docker.io" {
		return name.DefaultRegistry
	}
	return h
}

// helperTimeout bounds a credential helper's run.
const helperTimeout = 30 * time.Second

// runHelper asks docker-credential-NAME for the registry's credentials,
// as the user: their uid, gid and groups, their HOME, a plain PATH.
func runHelper(acct account, helper, reg string) (authn.Authenticator, error) {
	if strings.ContainsAny(helper, "/\\") || helper == "" {
		return nil, &credentialsError{fmt.Sprintf("credential helper %q is not a helper name", helper)}
	}
	// Found where the daemon (root) finds programs, never in a
	// directory of the user's choosing; run with a plain PATH.
	const path = "/usr/local/bin:/usr/bin:/bin"
	bin, err := lookPathIn("docker-credential-"+helper, os.Getenv("PATH")+":"+path)
	if err != nil {
		return nil, &credentialsError{fmt.Sprintf("credential helper docker-credential-%s is not installed (%v)", helper, err)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	defer cancel()
	server := reg
	if reg == name.DefaultRegistry {
		server = authn.DefaultAuthKey
	}
	cmd := exec.CommandContext(ctx, bin, "get")
	cmd.Stdin = strings.NewReader(server)
	cmd.Dir = "/"
	cmd.Env = []string{"HOME=" + acct.home, "PATH=" + path}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: acct.uid, Gid: acct.gid, Groups: acct.groups}}
	if err := cmd.Run(); err != nil {
		if strings.Contains(out.String()+errb.String(), "credentials not found") {
			return authn.Anonymous, nil
		}
		return nil, &credentialsError{fmt.Sprintf("credential helper docker-credential-%s: %v: %s", helper, err, strings.TrimSpace(errb.String()+out.String()))}
	}
	var c struct {
		Username string `json:"Username"`
		Secret   string `json:"Secret"`
	}
	if err := json.Unmarshal(out.Bytes(), &c); err != nil {
		return nil, &credentialsError{fmt.Sprintf("credential helper docker-credential-%s answered no credentials: %v", helper, err)}
	}
	if c.Username == "<token>" {
		return authn.FromConfig(authn.AuthConfig{IdentityToken: c.Secret}), nil
	}
	return authn.FromConfig(authn.AuthConfig{Username: c.Username, Password: c.Secret}), nil
}

// lookPathIn finds an executable in the directories of path.
func lookPathIn(file, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue // never the daemon's working directory
		}
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in %s", path)
}
