package httpapi

import (
	"strings"
	"testing"

	"github.com/infergate/infergate"
)

// FuzzModeRequest: any body decodes to a checked request or a 4xx error,
// never a panic; an accepted switch's policy converts or fails cleanly.
func FuzzModeRequest(f *testing.F) {
	for _, s := range []string{`{"action":"pin","mode":"realtime"}`, `{"action":"unpin"}`,
		`{"action":"switch","mode":"hybrid","policy":{"policy":"hybrid","max_queue_delay":"200ms","max_batch_size":8}}`,
		`{"action":"switch","mode":"hybrid","policy":{"max_queue_delay":"-1s"}}`, `{`, `null`, `[]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req, err := decodeModeRequest(strings.NewReader(body))
		if err != nil {
			if c := infergate.ErrorCode(err); c != infergate.EInvalid && c != infergate.ETooLarge {
				t.Fatalf("error code %q: %v", c, err)
			}
			return
		}
		switch req.Action {
		case "pin", "switch", "unpin":
		default:
			t.Fatalf("accepted action %q", req.Action)
		}
		if p, err := req.Policy.policy(); err == nil && p != nil && (p.MaxQueueDelay < 0 || p.MaxBatchSize < 0) {
			t.Fatalf("negative setting accepted: %+v", p)
		}
	})
}
