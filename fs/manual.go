package fs

// manual is /README: a short manual page of the tree.
const manual = `hypefs - virtual machines as files

  mkdir instances/NAME              create an instance (state "new")
  echo '{}' > instances/NAME/config boot it (the built-in guest; see config keys below)
  cat instances/NAME/status         new created booting running paused stopping stopped crashed error
  echo CMD > instances/NAME/ctl     start shutdown kill pause resume reboot
  cat instances/NAME/ctl            the commands valid now
  cat instances/NAME/log            the serial console so far (tail -f follows it)
  cat instances/NAME/console        live console output from now on; writing types into the guest
  cat instances/NAME/error          why the last thing failed
  cat instances/NAME/info           JSON: state, pids, times, exit
  rmdir instances/NAME              delete a stopped instance (EBUSY while it runs)

config keys: cpus (int), memory ("512M" or MiB), accel (auto kvm tcg hvf), hypervisor (auto qemu vz),
disk, entrypoint, cmd, env, workdir, image, network. Unknown keys and bad values are refused
with EINVAL, and the instance's error file says which key and why.

Files: /version, /host (cpus, memory, accel and why). See docs/filesystem.md in the source.
`
