package sixrd

import "errors"

// Errors returned by the package, wrapped with the values that caused them;
// match them with errors.Is.
var (
	// ErrPrefix means the 6rd prefix is not an IPv6 prefix without host bits.
	ErrPrefix = errors.New("bad 6rd prefix")
	// ErrIPv4 means an address that must be IPv4 is not.
	ErrIPv4 = errors.New("not an IPv4 address")
	// ErrMaskLen means the IPv4 mask length is outside 0..32.
	ErrMaskLen = errors.New("6rd IPv4 mask length outside 0..32")
	// ErrTooLong means the 6rd prefix and the IPv4 mask length give a
	// delegated prefix longer than /64.
	ErrTooLong = errors.New("6rd delegated prefix longer than /64")
	// ErrDelegated means a delegated prefix is not an IPv6 prefix without
	// host bits of length 64 or shorter.
	ErrDelegated = errors.New("bad 6rd delegated prefix")
	// ErrSubnetID means a subnet number does not fit in the delegated prefix.
	ErrSubnetID = errors.New("6rd subnet id out of range")
)
