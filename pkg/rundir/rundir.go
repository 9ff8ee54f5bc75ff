// Package rundir is where ifisp publishes what it did for other programs
// (radvd, dnsmasq, the health monitor, `ifisp status`) and where its
// writers take turns: /run/ifisp, or the folder IFISP_RUN_DIR names.
//
// /run is shared by every network namespace, so a router in a named one
// (`ip netns exec NS ifup ...`) gets a folder of its own without being
// told: /run/ifisp/netns/NS.
package rundir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Env is the environment variable that moves the folder.
const Env = "IFISP_RUN_DIR"

// Base is the folder of the machine's own network namespace.
const Base = "/run/ifisp"

// Dir returns the folder.
func Dir() string {
	if d := os.Getenv(Env); d != "" {
		return d
	}
	if ns := namedNetns(); ns != "" {
		return filepath.Join(Base, "netns", ns)
	}
	return Base
}

// namedNetns returns the name under /run/netns of the process's network
// namespace, as `ip netns identify` finds it, or "" for init's namespace
// and an unnamed one.
func namedNetns() string {
	self, ok := inode("/proc/self/ns/net")
	if !ok {
		return ""
	}
	// init's may be unreadable (a container): then a host namespace that
	// someone named too counts as named.
	if init, ok := inode("/proc/1/ns/net"); ok && init == self {
		return ""
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if ino, ok := inode(filepath.Join("/run/netns", e.Name())); ok && ino == self {
			return e.Name()
		}
	}
	return ""
}

type devIno struct{ dev, ino uint64 }

func inode(path string) (devIno, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return devIno{}, false
	}
	return devIno{uint64(st.Dev), st.Ino}, true
}

// Write replaces the file name (which may be in a subfolder) in the folder
// atomically (write, then rename), so a reader never sees half of it.
func Write(name string, data []byte) error {
	return WriteFile(filepath.Join(Dir(), name), data)
}

// WriteFile replaces the file at path as Write does, wherever it is (the
// health monitor's metrics file, for one), making its folder if need be.
func WriteFile(path string, data []byte) error {
	dir, base := filepath.Split(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Read returns the file name's contents; a missing file is (nil, nil).
func Read(name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(Dir(), name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// Remove removes the file name; a missing one counts as removed.
func Remove(name string) error {
	err := os.Remove(filepath.Join(Dir(), name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
