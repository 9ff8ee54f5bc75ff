package hooks

import "testing"

func TestLayout(t *testing.T) {
	hooks, err := Layout()
	if err != nil {
		t.Fatal(err)
	}
	if len(hooks) == 0 || !Binaries()["ifisp-route"] {
		t.Fatalf("layout: %v", hooks)
	}
}
