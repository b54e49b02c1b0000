module hypefs

go 1.26.0

require (
	github.com/Code-Hex/vz/v3 v3.7.1
	github.com/hanwen/go-fuse/v2 v2.12.1
	github.com/u-root/u-root v0.16.0
	github.com/xi2/xz v0.0.0-20171230120015-48954b6210f8
	golang.org/x/sys v0.50.0
)

require (
	github.com/Code-Hex/go-infinity-channel v1.0.0 // indirect
	github.com/dustin/go-humanize v1.0.1 // indirect
	github.com/pierrec/lz4/v4 v4.1.22 // indirect
	github.com/u-root/uio v0.0.0-20240224005618-d2acac8f3701 // indirect
	golang.org/x/mod v0.29.0 // indirect
)
