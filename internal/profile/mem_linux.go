package profile

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
)

// residentBytes is the process's resident set (VmRSS).
func residentBytes() (int64, bool) { return statusKB("VmRSS:") }

// peakBytes is the process's peak resident set (VmHWM) since the last
// resetPeak.
func peakBytes() (int64, bool) { return statusKB("VmHWM:") }

// resetPeak resets VmHWM to the current resident set (Linux 4.0+:
// "5" > /proc/self/clear_refs), and reports whether it could.
func resetPeak() bool { return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil }

func statusKB(field string) (int64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Bytes()
		if rest, ok := bytes.CutPrefix(line, []byte(field)); ok {
			f := bytes.Fields(rest)
			if len(f) == 0 {
				return 0, false
			}
			kb, err := strconv.ParseInt(string(f[0]), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}
