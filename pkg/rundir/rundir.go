// Package rundir is where ifisp publishes what it did for other programs
// (radvd, dnsmasq, the health monitor, `ifisp status`): /run/ifisp, or the
// folder IFISP_RUN_DIR names. /run is shared by every network namespace, so
// tests, and operators running several namespaced routers, give each its own.
package rundir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Env is the environment variable that moves the folder.
const Env = "IFISP_RUN_DIR"

// Dir returns the folder.
func Dir() string {
	if d := os.Getenv(Env); d != "" {
		return d
	}
	return "/run/ifisp"
}

// Write replaces the file name (which may be in a subfolder) in the folder
// atomically (write, then rename), so a reader never sees half of it.
func Write(name string, data []byte) error {
	path := filepath.Join(Dir(), name)
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
