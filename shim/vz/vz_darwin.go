//go:build darwin

package vz

import (
	"errors"
	"fmt"
	"net"
	"runtime"

	"github.com/Code-Hex/vz/v3"

	"hypefs/shim/engine"
)

// New returns the engine bound to Virtualization.framework.
func New() *Engine { return &Engine{hv: framework{}} }

// framework implements hypervisor with github.com/Code-Hex/vz/v3.
type framework struct{}

func (framework) supported() error {
	if runtime.GOARCH != "arm64" {
		return fmt.Errorf("the vz engine runs Linux arm64 guests and needs an Apple silicon Mac; this Mac is %s: %w",
			runtime.GOARCH, engine.ErrUnsupported)
	}
	return nil
}

func (framework) limits() limits {
	return limits{
		MinCPUs:   vz.VirtualMachineConfigurationMinimumAllowedCPUCount(),
		MaxCPUs:   vz.VirtualMachineConfigurationMaximumAllowedCPUCount(),
		MinMemory: vz.VirtualMachineConfigurationMinimumAllowedMemorySize(),
		MaxMemory: vz.VirtualMachineConfigurationMaximumAllowedMemorySize(),
	}
}

func (framework) newMachineID() ([]byte, error) {
	id, err := vz.NewGenericMachineIdentifier()
	if err := unavailable(err, "generic machine identifiers", 13); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	if id == nil || len(id.DataRepresentation()) == 0 {
		return nil, errors.New("the framework made no machine identifier")
	}
	return append([]byte(nil), id.DataRepresentation()...), nil
}

// unavailable turns vz's version errors into one wrapping
// engine.ErrUnsupported that says what is missing: the running macOS, or
// the SDK the shim was built with (vz checks both before a call that
// would otherwise raise an Objective-C exception).
func unavailable(err error, what string, macOS int) error {
	switch {
	case errors.Is(err, vz.ErrUnsupportedOSVersion):
		return fmt.Errorf("%s need macOS %d or later: %w", what, macOS, engine.ErrUnsupported)
	case errors.Is(err, vz.ErrBuildTargetOSVersion):
		return fmt.Errorf("%s need a shim built with the macOS %d SDK or later (rebuild with current Xcode command line tools): %w", what, macOS, engine.ErrUnsupported)
	}
	return nil
}

func (framework) checkMachineID(id []byte) error {
	_, err := machineIdentifier(id)
	return err
}

// machineIdentifier rebuilds a generic machine identifier from its data
// representation. The framework answers a damaged one with nil, which vz
// v3.7.1 wraps without a word (its DataRepresentation is then empty); a
// nil identifier must never reach a platform configuration.
func machineIdentifier(data []byte) (*vz.GenericMachineIdentifier, error) {
	if len(data) == 0 {
		return nil, errors.New("machine identifier: empty")
	}
	id, err := vz.NewGenericMachineIdentifierWithData(data)
	if err := unavailable(err, "generic machine identifiers", 13); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("machine identifier: %w", err)
	}
	if id == nil || len(id.DataRepresentation()) == 0 {
		return nil, fmt.Errorf("machine identifier: the framework does not accept these %d bytes (a damaged file?)", len(data))
	}
	return id, nil
}

func (framework) newVM(cfg Config, con consoleFiles) (vmHandle, error) {
	conf, err := buildConfiguration(cfg, con)
	if err != nil {
		return nil, err
	}
	vm, err := vz.NewVirtualMachine(conf)
	if err != nil {
		return nil, fmt.Errorf("create virtual machine: %w", err)
	}
	return &vzVM{vm: vm, conf: conf, con: con}, nil
}

// buildConfiguration translates cfg into the framework's configuration and
// validates it.
func buildConfiguration(cfg Config, con consoleFiles) (*vz.VirtualMachineConfiguration, error) {
	opts := []vz.LinuxBootLoaderOption{vz.WithCommandLine(cfg.Cmdline)}
	if cfg.Initrd != "" {
		opts = append(opts, vz.WithInitrd(cfg.Initrd))
	}
	boot, err := vz.NewLinuxBootLoader(cfg.Kernel, opts...)
	if err != nil {
		return nil, fmt.Errorf("linux boot loader: %w", err)
	}
	conf, err := vz.NewVirtualMachineConfiguration(boot, cfg.CPUs, cfg.MemoryBytes)
	if err != nil {
		return nil, fmt.Errorf("vm configuration: %w", err)
	}

	if len(cfg.MachineID) > 0 {
		id, err := machineIdentifier(cfg.MachineID)
		if err != nil {
			return nil, err
		}
		platform, err := vz.NewGenericPlatformConfiguration(vz.WithGenericMachineIdentifier(id))
		if err != nil {
			return nil, fmt.Errorf("platform: %w", err)
		}
		conf.SetPlatformVirtualMachineConfiguration(platform)
	}

	serial, err := vz.NewFileHandleSerialPortAttachment(con.guestIn, con.guestOut)
	if err != nil {
		return nil, fmt.Errorf("console attachment: %w", err)
	}
	console, err := vz.NewVirtioConsoleDeviceSerialPortConfiguration(serial)
	if err != nil {
		return nil, fmt.Errorf("console device: %w", err)
	}
	conf.SetSerialPortsVirtualMachineConfiguration([]*vz.VirtioConsoleDeviceSerialPortConfiguration{console})

	disks, err := storageDevices(cfg)
	if err != nil {
		return nil, err
	}
	conf.SetStorageDevicesVirtualMachineConfiguration(disks)
	nics, err := networkDevices(cfg)
	if err != nil {
		return nil, err
	}
	conf.SetNetworkDevicesVirtualMachineConfiguration(nics)

	if cfg.Entropy {
		rng, err := vz.NewVirtioEntropyDeviceConfiguration()
		if err != nil {
			return nil, fmt.Errorf("entropy device: %w", err)
		}
		conf.SetEntropyDevicesVirtualMachineConfiguration([]*vz.VirtioEntropyDeviceConfiguration{rng})
	}
	if cfg.Balloon {
		balloon, err := vz.NewVirtioTraditionalMemoryBalloonDeviceConfiguration()
		if err != nil {
			return nil, fmt.Errorf("memory balloon: %w", err)
		}
		conf.SetMemoryBalloonDevicesVirtualMachineConfiguration([]vz.MemoryBalloonDeviceConfiguration{balloon})
	}
	if cfg.Vsock {
		sock, err := vz.NewVirtioSocketDeviceConfiguration()
		if err != nil {
			return nil, fmt.Errorf("vsock device: %w", err)
		}
		conf.SetSocketDevicesVirtualMachineConfiguration([]vz.SocketDeviceConfiguration{sock})
	}

	if ok, err := conf.Validate(); err != nil {
		return nil, fmt.Errorf("validate vm configuration: %w", err)
	} else if !ok {
		return nil, errors.New("validate vm configuration: the framework refused it without a reason")
	}
	return conf, nil
}

// storageDevices are cfg's disks: virtio-blk on raw images.
func storageDevices(cfg Config) ([]vz.StorageDeviceConfiguration, error) {
	var disks []vz.StorageDeviceConfiguration
	for i, d := range cfg.Disks {
		att, err := vz.NewDiskImageStorageDeviceAttachmentWithCacheAndSync(d.Path, d.ReadOnly,
			cachingMode(d.Caching), vz.DiskImageSynchronizationModeFsync)
		if err != nil {
			return nil, fmt.Errorf("disk %d %s: %w", i, d.Path, err)
		}
		blk, err := vz.NewVirtioBlockDeviceConfiguration(att)
		if err != nil {
			return nil, fmt.Errorf("disk %d: %w", i, err)
		}
		disks = append(disks, blk)
	}
	return disks, nil
}

// networkDevices are cfg's NICs: virtio-net on the framework's NAT.
func networkDevices(cfg Config) ([]*vz.VirtioNetworkDeviceConfiguration, error) {
	var nics []*vz.VirtioNetworkDeviceConfiguration
	for i, n := range cfg.NICs {
		nat, err := vz.NewNATNetworkDeviceAttachment()
		if err != nil {
			return nil, fmt.Errorf("nic %d nat attachment: %w", i, err)
		}
		dev, err := vz.NewVirtioNetworkDeviceConfiguration(nat)
		if err != nil {
			return nil, fmt.Errorf("nic %d: %w", i, err)
		}
		hw, err := net.ParseMAC(n.MAC)
		if err != nil {
			return nil, fmt.Errorf("nic %d mac: %w", i, err)
		}
		mac, err := vz.NewMACAddress(hw)
		if err != nil {
			return nil, fmt.Errorf("nic %d mac: %w", i, err)
		}
		dev.SetMACAddress(mac)
		nics = append(nics, dev)
	}
	return nics, nil
}

// cachingMode maps Config's caching name; anything but "cached" is a
// programming error caught by the tests of configFromSpec.
func cachingMode(name string) vz.DiskImageCachingMode {
	switch name {
	case "uncached":
		return vz.DiskImageCachingModeUncached
	case "automatic":
		return vz.DiskImageCachingModeAutomatic
	}
	return vz.DiskImageCachingModeCached
}

// vzVM implements vmHandle. It keeps the configuration and the console
// files referenced as long as the VM lives. It calls no save or restore
// API: on a shim built with an SDK older than macOS 14 those raise an
// Objective-C exception, and vz refuses snapshots anyway.
type vzVM struct {
	vm   *vz.VirtualMachine
	conf *vz.VirtualMachineConfiguration
	con  consoleFiles
}

func (v *vzVM) Start() error  { return v.vm.Start() }
func (v *vzVM) Pause() error  { return v.vm.Pause() }
func (v *vzVM) Resume() error { return v.vm.Resume() }
func (v *vzVM) Stop() error   { return v.vm.Stop() }

func (v *vzVM) RequestStop() error {
	ok, err := v.vm.RequestStop()
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("the framework did not deliver the stop request")
	}
	return nil
}

func (v *vzVM) NextState(quit <-chan struct{}) (State, bool) {
	select {
	case s := <-v.vm.StateChangedNotify():
		return mapState(s), true
	case <-quit:
		return 0, false
	}
}

func (v *vzVM) ConnectVsock(port uint32) (net.Conn, error) {
	devs := v.vm.SocketDevices()
	if len(devs) == 0 {
		return nil, errors.New("the vm has no socket device")
	}
	return asConn(devs[0].Connect(port))
}

// mapState translates the framework's states by name, not by value.
func mapState(s vz.VirtualMachineState) State {
	switch s {
	case vz.VirtualMachineStateStopped:
		return StateStopped
	case vz.VirtualMachineStateRunning:
		return StateRunning
	case vz.VirtualMachineStatePaused:
		return StatePaused
	case vz.VirtualMachineStateError:
		return StateError
	case vz.VirtualMachineStateStarting:
		return StateStarting
	case vz.VirtualMachineStatePausing:
		return StatePausing
	case vz.VirtualMachineStateResuming:
		return StateResuming
	case vz.VirtualMachineStateStopping:
		return StateStopping
	case vz.VirtualMachineStateSaving:
		return StateSaving
	case vz.VirtualMachineStateRestoring:
		return StateRestoring
	}
	// An unknown future state is not terminal; the VM keeps being watched.
	return StateStarting
}
