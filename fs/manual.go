package fs

// manual is /README: a short manual page of the tree.
const manual = `hypefs - virtual machines as files

  mkdir instances/NAME              create an instance (state "new")
  echo '{}' > instances/NAME/config boot it (the built-in guest; see config keys below)
  echo '{"image":"alpine:3.20"}' > instances/NAME/config   boot an OCI image's program
  cat instances/NAME/status         new created booting running paused stopping stopped crashed error
  echo CMD > instances/NAME/ctl     start shutdown kill pause resume reboot
  cat instances/NAME/ctl            the commands valid now (one command per write)
  cat instances/NAME/log            the serial console so far (tail -f follows it)
  cat instances/NAME/console        live console output from now on; writing types into the guest
  cat instances/NAME/error          the last error: its time, its cause, and why
  cat instances/NAME/info           JSON: state, pids, times, exit, ip, mac, image
  cat instances/NAME/exit           the guest program's exit code, once it exited
  cat instances/NAME/events         this instance's state changes, as they happen
  cat events                        every instance's state changes, as they happen
  rmdir instances/NAME              delete a stopped instance (EBUSY while it runs); rm -r too
  echo 'pull REF' > images/ctl      pull an OCI image; 'rm REF' removes one

config keys: cpus (int), memory ("512M" or MiB), disk ("1G"), image (OCI reference),
entrypoint, cmd (arrays), env (object), workdir, network (bool), accel (auto kvm tcg hvf),
hypervisor (auto qemu vz). Unknown keys and bad values are refused with EINVAL, and the
instance's error file says which key and why.

The follow files (events, instances/NAME/console, instances/NAME/events) are not
listed by ls: they are opened by name, so that cp -r, tar, zip, rsync, grep -r and find
never wait on them. Opened O_NONBLOCK they return what is there, or 0 bytes.

Who may: root and the members of the daemon's group. An instance is its maker's: only
they and root may write its config, ctl and console, read its config, console and logs, or
remove it; other members may list it and read its status, info, error, exit and events.

Files: /version, /host (cpus, memory, accel and why, bridge and subnet). Watch
instances/NAME/status with inotify (attrib) to learn of state changes. The same tree is
served over 9P with hypefs mount --9p ADDR. See docs/filesystem.md and docs/security.md in
the source.
`
