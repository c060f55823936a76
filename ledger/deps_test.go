package ledger

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the ledger importable by the pure engine: no network, no
// wire, no Redis client (that lives in ledger/redisledger).
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == "net", strings.HasPrefix(dep, "net/"),
			strings.HasPrefix(dep, "github.com/redis/"),
			strings.HasPrefix(dep, "google.golang.org/grpc"),
			strings.HasPrefix(dep, "github.com/personad/personad/proto"),
			strings.HasPrefix(dep, "github.com/personad/personad/engine"),
			strings.HasPrefix(dep, "github.com/personad/personad/bidder"):
			t.Errorf("ledger depends on %s", dep)
		}
	}
}
