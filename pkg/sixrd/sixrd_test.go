package sixrd_test

import (
	"errors"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/ifisp/ifisp/pkg/sixrd"
)

func TestDelegated(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		o      int
		v4     string
		want   string
	}{
		// RFC 5969 style examples with the documentation ranges.
		{"2001:db8::/32", 0, "192.0.2.1", "2001:db8:c000:201::/64"},
		{"2001:db8::/32", 8, "192.0.2.1", "2001:db8:2:100::/56"},
		{"2001:db8::/32", 16, "192.0.2.1", "2001:db8:201::/48"},
		{"2001:db8::/32", 24, "192.0.2.1", "2001:db8:100::/40"},
		{"2001:db8::/32", 31, "192.0.2.1", "2001:db8:8000::/33"},
		// o=32: every IPv4 bit is implied, the delegated prefix is the 6rd prefix.
		{"2001:db8::/32", 32, "192.0.2.1", "2001:db8::/32"},
		{"2001:db8:ab00::/40", 32, "198.51.100.7", "2001:db8:ab00::/40"},
		// Bits of v4 above the mask length are dropped, whatever they are.
		{"2001:db8::/32", 8, "10.0.2.1", "2001:db8:2:100::/56"},
		{"2001:db8::/32", 8, "255.0.2.1", "2001:db8:2:100::/56"},
		// Odd alignments: the suffix straddles 16-bit groups.
		{"2001:db8::/29", 13, "192.0.2.1", "2001:db8:201::/48"},
		{"2001:db8::/29", 13, "10.255.255.255", "2001:dbf:ffff::/48"},
		{"2001:db8::/31", 0, "255.255.255.255", "2001:db9:ffff:fffe::/63"},
		{"2001:db8::/31", 0, "128.0.0.1", "2001:db9:0:2::/63"},
		{"2001:db8:8000::/33", 1, "192.0.2.1", "2001:db8:c000:201::/64"},
		{"2001:db8:fe00::/39", 7, "203.0.113.9", "2001:db8:ff00:7109::/64"},
		// Edge lengths: p=0 (the 6rd prefix is ::/0), and n exactly 64.
		{"::/0", 0, "192.0.2.1", "c000:201::/32"},
		{"::/0", 32, "192.0.2.1", "::/0"},
		{"2001:db8:1234::/48", 16, "192.0.2.1", "2001:db8:1234:201::/64"},
		{"2001:db8:1234:5600::/56", 24, "192.0.2.77", "2001:db8:1234:564d::/64"},
		{"2001:db8:1234:5678::/64", 32, "192.0.2.1", "2001:db8:1234:5678::/64"},
		// The zero IPv4 address and all-ones are ordinary inputs.
		{"2001:db8::/32", 0, "0.0.0.0", "2001:db8::/64"},
		{"2001:db8::/32", 0, "255.255.255.255", "2001:db8:ffff:ffff::/64"},
	} {
		got, err := sixrd.Delegated(netip.MustParsePrefix(tc.prefix), tc.o, netip.MustParseAddr(tc.v4))
		if err != nil {
			t.Errorf("Delegated(%s, %d, %s): %v", tc.prefix, tc.o, tc.v4, err)
			continue
		}
		if want := netip.MustParsePrefix(tc.want); got != want {
			t.Errorf("Delegated(%s, %d, %s) = %s, want %s", tc.prefix, tc.o, tc.v4, got, want)
		}
	}
}

func TestDelegatedErrors(t *testing.T) {
	for _, tc := range []struct {
		prefix netip.Prefix
		o      int
		v4     netip.Addr
		want   error
		// words that the message must contain: the values that caused it
		words []string
	}{
		{pfx("2001:db8::/60"), 0, addr("192.0.2.1"), sixrd.ErrTooLong, []string{"2001:db8::/60", "mask length 0", "/92"}},
		{pfx("2001:db8::/33"), 0, addr("192.0.2.1"), sixrd.ErrTooLong, []string{"2001:db8::/33", "/65"}},
		{pfx("2001:db8:1234:5600::/56"), 23, addr("192.0.2.1"), sixrd.ErrTooLong, []string{"mask length 23", "/65"}},
		{pfx("2001:db8::/128"), 32, addr("192.0.2.1"), sixrd.ErrTooLong, []string{"/128"}},
		{pfx("2001:db8:1::/32"), 0, addr("192.0.2.1"), sixrd.ErrPrefix, []string{"2001:db8:1::/32", "host bits", "2001:db8::/32"}},
		{pfx("192.0.2.0/24"), 0, addr("192.0.2.1"), sixrd.ErrPrefix, []string{"192.0.2.0/24", "not an IPv6 prefix"}},
		{netip.Prefix{}, 0, addr("192.0.2.1"), sixrd.ErrPrefix, nil},
		{pfx("2001:db8::/32"), 0, addr("2001:db8::1"), sixrd.ErrIPv4, []string{"2001:db8::1"}},
		{pfx("2001:db8::/32"), 0, addr("::ffff:192.0.2.1"), sixrd.ErrIPv4, []string{"::ffff:192.0.2.1", "IPv4-mapped", "want 192.0.2.1"}},
		{pfx("2001:db8::/32"), 0, netip.Addr{}, sixrd.ErrIPv4, []string{"none given"}},
		{pfx("2001:db8::/32"), -1, addr("192.0.2.1"), sixrd.ErrMaskLen, []string{"-1"}},
		{pfx("2001:db8::/32"), 33, addr("192.0.2.1"), sixrd.ErrMaskLen, []string{"33"}},
	} {
		got, err := sixrd.Delegated(tc.prefix, tc.o, tc.v4)
		if !errors.Is(err, tc.want) {
			t.Errorf("Delegated(%s, %d, %s) = %s, %v; want error %q", tc.prefix, tc.o, tc.v4, got, err, tc.want)
			continue
		}
		if got.IsValid() {
			t.Errorf("Delegated(%s, %d, %s) returned %s with its error", tc.prefix, tc.o, tc.v4, got)
		}
		for _, w := range tc.words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Delegated(%s, %d, %s): error %q does not mention %q", tc.prefix, tc.o, tc.v4, err, w)
			}
		}
	}
}

func TestRelayNextHop(t *testing.T) {
	for _, tc := range []struct{ relay, want string }{
		{"192.0.2.1", "::192.0.2.1"},
		{"203.0.113.254", "::cb00:71fe"},
		{"0.0.0.1", "::1"},
		{"255.255.255.255", "::ffff:ffff"},
	} {
		got := sixrd.RelayNextHop(addr(tc.relay))
		if want := addr(tc.want); got != want {
			t.Errorf("RelayNextHop(%s) = %s, want %s", tc.relay, got, want)
		}
		if !got.Is6() || got.Is4In6() {
			t.Errorf("RelayNextHop(%s) = %s is not a plain IPv6 address", tc.relay, got)
		}
		if got.Unmap() != got {
			t.Errorf("RelayNextHop(%s) = %s unmaps to %s", tc.relay, got, got.Unmap())
		}
	}
	for _, bad := range []netip.Addr{{}, addr("2001:db8::1"), addr("::ffff:192.0.2.1")} {
		if got := sixrd.RelayNextHop(bad); got.IsValid() {
			t.Errorf("RelayNextHop(%s) = %s, want the zero Addr", bad, got)
		}
	}
}

func TestRelayPrefix(t *testing.T) {
	for _, tc := range []struct {
		v4   string
		o    int
		want string
	}{
		{"192.0.2.1", 0, "0.0.0.0/0"},
		{"192.0.2.1", 8, "192.0.0.0/8"},
		{"192.0.2.1", 13, "192.0.0.0/13"},
		{"10.255.255.255", 13, "10.248.0.0/13"},
		{"192.0.2.1", 32, "192.0.2.1/32"},
	} {
		got, err := sixrd.RelayPrefix(addr(tc.v4), tc.o)
		if err != nil || got != pfx(tc.want) {
			t.Errorf("RelayPrefix(%s, %d) = %s, %v; want %s", tc.v4, tc.o, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		v4   netip.Addr
		o    int
		want error
	}{
		{addr("2001:db8::1"), 8, sixrd.ErrIPv4},
		{addr("::ffff:192.0.2.1"), 8, sixrd.ErrIPv4},
		{netip.Addr{}, 8, sixrd.ErrIPv4},
		{addr("192.0.2.1"), -1, sixrd.ErrMaskLen},
		{addr("192.0.2.1"), 33, sixrd.ErrMaskLen},
	} {
		if got, err := sixrd.RelayPrefix(tc.v4, tc.o); !errors.Is(err, tc.want) {
			t.Errorf("RelayPrefix(%s, %d) = %s, %v; want error %q", tc.v4, tc.o, got, err, tc.want)
		}
	}
}

// TestRelayPrefixRestoresIPv4 checks what the kernel does with the pieces:
// the IPv4 bits the relay prefix keeps plus the bits the delegated prefix
// carries give back the customer's IPv4 address.
func TestRelayPrefixRestoresIPv4(t *testing.T) {
	rng := rand.New(rand.NewPCG(5969, 2))
	for range 2000 {
		v4 := randIPv4(rng)
		o := rng.IntN(33)
		p := rng.IntN(32 + o + 1) // p + 32 - o <= 64
		prefix := randPrefix(rng, p)
		d, err := sixrd.Delegated(prefix, o, v4)
		if err != nil {
			t.Fatalf("Delegated(%s, %d, %s): %v", prefix, o, v4, err)
		}
		rp, err := sixrd.RelayPrefix(v4, o)
		if err != nil {
			t.Fatalf("RelayPrefix(%s, %d): %v", v4, o, err)
		}
		// bits p..n-1 of d are the IPv4 suffix
		suffix := new(big.Int).Rsh(toInt(d.Addr()), uint(128-d.Bits()))
		suffix.And(suffix, mask(32-o))
		got := new(big.Int).Or(toInt(rp.Addr()), suffix)
		if want := toInt(v4); got.Cmp(want) != 0 {
			t.Fatalf("%s with relay prefix %s restores %s, want %s", d, rp, got, v4)
		}
	}
}

func TestSubnet(t *testing.T) {
	for _, tc := range []struct {
		delegated string
		id        uint64
		want      string
	}{
		{"2001:db8:c000:201::/64", 0, "2001:db8:c000:201::/64"},
		{"2001:db8:2:100::/56", 0, "2001:db8:2:100::/64"},
		{"2001:db8:2:100::/56", 1, "2001:db8:2:101::/64"},
		{"2001:db8:2:100::/56", 255, "2001:db8:2:1ff::/64"},
		{"2001:db8:201::/48", 0xbeef, "2001:db8:201:beef::/64"},
		{"2001:db8:8000::/33", 1, "2001:db8:8000:1::/64"},
		{"2001:db8:8000::/33", 1<<31 - 1, "2001:db8:ffff:ffff::/64"},
		{"2001:db9:0:2::/63", 1, "2001:db9:0:3::/64"},
		{"::/0", 0, "::/64"},
		{"::/0", 1<<64 - 1, "ffff:ffff:ffff:ffff::/64"},
		{"c000:201::/32", 7, "c000:201:0:7::/64"},
	} {
		got, err := sixrd.Subnet(pfx(tc.delegated), tc.id)
		if err != nil || got != pfx(tc.want) {
			t.Errorf("Subnet(%s, %d) = %s, %v; want %s", tc.delegated, tc.id, got, err, tc.want)
		}
	}
}

func TestSubnetErrors(t *testing.T) {
	for _, tc := range []struct {
		delegated netip.Prefix
		id        uint64
		want      error
		words     []string
	}{
		{pfx("2001:db8:c000:201::/64"), 1, sixrd.ErrSubnetID, []string{"subnet 1", "2001:db8:c000:201::/64", "0..0"}},
		{pfx("2001:db8:2:100::/56"), 256, sixrd.ErrSubnetID, []string{"subnet 256", "256 subnets", "0..255"}},
		{pfx("2001:db8:8000::/33"), 1 << 31, sixrd.ErrSubnetID, []string{"0..2147483647"}},
		{pfx("2001:db8::/32"), 1<<64 - 1, sixrd.ErrSubnetID, []string{"18446744073709551615"}},
		{pfx("2001:db8::1/64"), 0, sixrd.ErrDelegated, []string{"2001:db8::1/64", "host bits"}},
		{pfx("2001:db8::/96"), 0, sixrd.ErrDelegated, []string{"2001:db8::/96", "longer than /64"}},
		{pfx("192.0.2.0/24"), 0, sixrd.ErrDelegated, []string{"192.0.2.0/24"}},
		{netip.Prefix{}, 0, sixrd.ErrDelegated, nil},
	} {
		got, err := sixrd.Subnet(tc.delegated, tc.id)
		if !errors.Is(err, tc.want) {
			t.Errorf("Subnet(%s, %d) = %s, %v; want error %q", tc.delegated, tc.id, got, err, tc.want)
			continue
		}
		for _, w := range tc.words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Subnet(%s, %d): error %q does not mention %q", tc.delegated, tc.id, err, w)
			}
		}
	}
}

func TestLANAddr(t *testing.T) {
	for _, tc := range []struct{ subnet, want string }{
		{"2001:db8:c000:201::/64", "2001:db8:c000:201::1"},
		{"2001:db8:2:1ff::/64", "2001:db8:2:1ff::1"},
		{"2001:db8:2:100::/56", "2001:db8:2:100::1"},
		{"2001:db8:2:1ff::/56", "2001:db8:2:100::1"}, // host bits are masked off
		{"::/64", "::1"},
	} {
		if got := sixrd.LANAddr(pfx(tc.subnet)); got != addr(tc.want) {
			t.Errorf("LANAddr(%s) = %s, want %s", tc.subnet, got, tc.want)
		}
	}
	for _, bad := range []netip.Prefix{{}, pfx("192.0.2.0/24"), pfx("2001:db8::/96")} {
		if got := sixrd.LANAddr(bad); got.IsValid() {
			t.Errorf("LANAddr(%s) = %s, want the zero Addr", bad, got)
		}
	}
}

// TestAgainstReference compares the package with a big.Int transcription of
// RFC 5969 over random inputs (deterministic seed), including inputs that
// must fail.
func TestAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(5969, 1))
	var ok, tooLong int
	for range 20000 {
		p := rng.IntN(65)
		o := rng.IntN(33)
		prefix := randPrefix(rng, p)
		v4 := randIPv4(rng)
		id := rng.Uint64()
		if rng.IntN(2) == 0 {
			id >>= rng.IntN(64) // small ids too, so that most fit
		}
		if checkOne(t, prefix, o, v4, id) {
			ok++
		} else {
			tooLong++
		}
	}
	// The generator must exercise both outcomes in earnest.
	if ok < 4000 || tooLong < 4000 {
		t.Errorf("random inputs gave %d delegations and %d too-long errors; want both >= 4000", ok, tooLong)
	}
}

// FuzzDelegated runs the reference comparison on fuzzer-chosen inputs; plain
// `go test` runs the seeds.
func FuzzDelegated(f *testing.F) {
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8}, 32, 0, uint32(0xc0000201), uint64(0))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8}, 32, 8, uint32(0xc0000201), uint64(255))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8}, 29, 13, uint32(0x0affffff), uint64(1<<16))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8}, 60, 0, uint32(0xc0000201), uint64(0))
	f.Add([]byte{}, 0, 32, uint32(0), uint64(1<<64-1))
	f.Fuzz(func(t *testing.T, prefixBytes []byte, p, o int, v4 uint32, id uint64) {
		if p < 0 || p > 128 || o < -1 || o > 33 {
			return
		}
		var b [16]byte
		copy(b[:], prefixBytes)
		prefix := netip.PrefixFrom(netip.AddrFrom16(b), p).Masked()
		var a [4]byte
		a[0], a[1], a[2], a[3] = byte(v4>>24), byte(v4>>16), byte(v4>>8), byte(v4)
		checkOne(t, prefix, o, netip.AddrFrom4(a), id)
	})
}

// checkOne compares Delegated, Subnet and LANAddr with the reference on one
// input, and reports whether the delegation succeeded.
func checkOne(t *testing.T, prefix netip.Prefix, o int, v4 netip.Addr, id uint64) bool {
	t.Helper()
	got, err := sixrd.Delegated(prefix, o, v4)
	want, wantOK := refDelegated(prefix, o, v4)
	if !wantOK {
		if err == nil {
			t.Fatalf("Delegated(%s, %d, %s) = %s, want an error", prefix, o, v4, got)
		}
		return false
	}
	if err != nil || got != want {
		t.Fatalf("Delegated(%s, %d, %s) = %s, %v; reference says %s", prefix, o, v4, got, err, want)
	}
	sub, err := sixrd.Subnet(got, id)
	wantSub, subOK := refSubnet(got, id)
	switch {
	case !subOK && err == nil:
		t.Fatalf("Subnet(%s, %d) = %s, want an error", got, id, sub)
	case !subOK:
		if !errors.Is(err, sixrd.ErrSubnetID) {
			t.Fatalf("Subnet(%s, %d): %v, want %q", got, id, err, sixrd.ErrSubnetID)
		}
	case err != nil || sub != wantSub:
		t.Fatalf("Subnet(%s, %d) = %s, %v; reference says %s", got, id, sub, err, wantSub)
	default:
		lan := sixrd.LANAddr(sub)
		if want := fromInt(new(big.Int).Add(toInt(wantSub.Addr()), big.NewInt(1))); lan != want {
			t.Fatalf("LANAddr(%s) = %s, reference says %s", sub, lan, want)
		}
		if !sub.Contains(lan) || !prefix.Contains(lan) {
			t.Fatalf("LANAddr(%s) = %s is outside %s or %s", sub, lan, sub, prefix)
		}
	}
	return true
}

// refDelegated is RFC 5969 section 4 read literally, with 128-bit integers:
// delegated = 6rd prefix | (IPv4 address mod 2^(32-o)) << (128 - n).
func refDelegated(prefix netip.Prefix, o int, v4 netip.Addr) (netip.Prefix, bool) {
	if o < 0 || o > 32 {
		return netip.Prefix{}, false
	}
	n := prefix.Bits() + 32 - o
	if n > 64 {
		return netip.Prefix{}, false
	}
	suffix := new(big.Int).And(toInt(v4), mask(32-o))
	d := new(big.Int).Or(toInt(prefix.Addr()), suffix.Lsh(suffix, uint(128-n)))
	return netip.PrefixFrom(fromInt(d), n), true
}

// refSubnet is subnet = delegated | id << 64, for id < 2^(64-n).
func refSubnet(delegated netip.Prefix, id uint64) (netip.Prefix, bool) {
	i := new(big.Int).SetUint64(id)
	if i.Cmp(new(big.Int).Lsh(big.NewInt(1), uint(64-delegated.Bits()))) >= 0 {
		return netip.Prefix{}, false
	}
	s := new(big.Int).Or(toInt(delegated.Addr()), i.Lsh(i, 64))
	return netip.PrefixFrom(fromInt(s), 64), true
}

func toInt(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

func fromInt(i *big.Int) netip.Addr {
	var b [16]byte
	return netip.AddrFrom16([16]byte(i.FillBytes(b[:])))
}

func mask(bits int) *big.Int {
	return new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(bits)), big.NewInt(1))
}

func randPrefix(rng *rand.Rand, bits int) netip.Prefix {
	var b [16]byte
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), bits).Masked()
}

func randIPv4(rng *rand.Rand) netip.Addr {
	var b [4]byte
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return netip.AddrFrom4(b)
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
