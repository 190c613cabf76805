package remote

import (
	"encoding/json"
	"math"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/infergate/infergate"
)

// IsRemote reports whether path names a remote model: an http:// or
// https:// URL (scheme in any case).
func IsRemote(path string) bool {
	i := strings.Index(path, "://")
	if i < 0 {
		return false
	}
	s := strings.ToLower(path[:i])
	return s == "http" || s == "https"
}

// modelURL is a parsed upstream model URL.
type modelURL struct {
	meta  string // GET: model metadata
	infer string // POST: inference
	// redacted is meta with any password masked, for errors and logs.
	redacted string
}

// parseModelURL checks an upstream model URL: http or https, a host, and
// a path that ends in /v2/models/{name} or
// /v2/models/{name}/versions/{version} (any prefix before it, for a
// gateway). A trailing slash and a query are kept out of and in the
// derived URLs respectively.
func parseModelURL(raw string) (modelURL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return modelURL{}, infergate.Errorf(infergate.EInvalid, "model URL: %v", err)
	}
	red := u.Redacted()
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		return modelURL{}, infergate.Errorf(infergate.EInvalid, "model URL %s: scheme must be http or https", red)
	}
	if u.Host == "" {
		return modelURL{}, infergate.Errorf(infergate.EInvalid, "model URL %s: no host", red)
	}
	if u.Fragment != "" {
		return modelURL{}, infergate.Errorf(infergate.EInvalid, "model URL %s: has a fragment", red)
	}
	// Segments are read escaped, so that a model name may hold an
	// escaped slash.
	p := strings.TrimSuffix(u.EscapedPath(), "/")
	if !modelPath(strings.Split(p, "/")) {
		return modelURL{}, infergate.Errorf(infergate.EInvalid,
			"model URL %s: path must end in /v2/models/{name} or /v2/models/{name}/versions/{version}", red)
	}
	meta, infer := *u, *u
	if err := setPath(&meta, p); err != nil {
		return modelURL{}, infergate.Errorf(infergate.EInvalid, "model URL %s: %v", red, err)
	}
	if err := setPath(&infer, p+"/infer"); err != nil {
		return modelURL{}, infergate.Errorf(infergate.EInvalid, "model URL %s: %v", red, err)
	}
	return modelURL{meta: meta.String(), infer: infer.String(), redacted: meta.Redacted()}, nil
}

// setPath sets u's path from its escaped form.
func setPath(u *url.URL, escaped string) error {
	p, err := url.PathUnescape(escaped)
	if err != nil {
		return err
	}
	u.Path, u.RawPath = p, escaped
	return nil
}

// modelPath reports whether the path segments end in v2/models/{name}
// or v2/models/{name}/versions/{version}, with non-empty name and version.
func modelPath(seg []string) bool {
	n := len(seg)
	if n >= 3 && seg[n-3] == "v2" && seg[n-2] == "models" && seg[n-1] != "" {
		return true
	}
	return n >= 5 && seg[n-5] == "v2" && seg[n-4] == "models" && seg[n-3] != "" &&
		seg[n-2] == "versions" && seg[n-1] != ""
}

// Metadata bounds.
const (
	maxMetaTensors = 64
	maxMetaRank    = 32
	// maxFixedElements bounds the product of a tensor's fixed dimensions:
	// larger is surely not a real model, and infergate allocates inputs of
	// that size for warmup.
	maxFixedElements = math.MaxInt32
)

// metadata is the v2 model metadata response. Unknown fields (versions,
// platform, parameters, ...) are ignored.
type metadata struct {
	Name    string       `json:"name"`
	Error   *string      `json:"error"`
	Inputs  []metaTensor `json:"inputs"`
	Outputs []metaTensor `json:"outputs"`
}

type metaTensor struct {
	Name     string  `json:"name"`
	DataType string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// parseMetadata decodes a v2 model metadata body into the model's input
// and output specs, in the upstream's order. A dimension of -1 is dynamic.
//
// Errors are *infergate.Error: EUnprocess for a model infergate cannot
// serve (a BYTES or unknown datatype), EInvalid for malformed or
// inconsistent metadata (no inputs or outputs, empty or duplicate names,
// dimensions below -1, rank over 32), EInternal for a v2 error body.
func parseMetadata(body []byte) (inputs, outputs []infergate.TensorSpec, err error) {
	var m metadata
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, nil, infergate.Errorf(infergate.EInvalid, "model metadata: %v", err)
	}
	if m.Error != nil {
		return nil, nil, infergate.Errorf(infergate.EInternal, "model metadata: upstream error: %s", truncate(*m.Error))
	}
	if inputs, err = specs("input", m.Inputs); err != nil {
		return nil, nil, err
	}
	if outputs, err = specs("output", m.Outputs); err != nil {
		return nil, nil, err
	}
	return inputs, outputs, nil
}

func specs(kind string, ts []metaTensor) ([]infergate.TensorSpec, error) {
	if len(ts) == 0 {
		return nil, infergate.Errorf(infergate.EInvalid, "model metadata: no %ss", kind)
	}
	if len(ts) > maxMetaTensors {
		return nil, infergate.Errorf(infergate.EInvalid, "model metadata: %d %ss (at most %d)", len(ts), kind, maxMetaTensors)
	}
	out := make([]infergate.TensorSpec, len(ts))
	seen := make(map[string]bool, len(ts))
	for i, t := range ts {
		if t.Name == "" {
			return nil, infergate.Errorf(infergate.EInvalid, "model metadata: %ss[%d] has no name", kind, i)
		}
		if seen[t.Name] {
			return nil, infergate.Errorf(infergate.EInvalid, "model metadata: duplicate %s %q", kind, t.Name)
		}
		seen[t.Name] = true
		dt := infergate.DataType(t.DataType)
		if !dt.Valid() {
			return nil, infergate.Errorf(infergate.EUnprocess, "model metadata: %s %q has datatype %q, which infergate does not support",
				kind, t.Name, truncate(t.DataType))
		}
		if t.Shape == nil {
			return nil, infergate.Errorf(infergate.EInvalid, "model metadata: %s %q has no shape", kind, t.Name)
		}
		if len(t.Shape) > maxMetaRank {
			return nil, infergate.Errorf(infergate.EInvalid, "model metadata: %s %q has rank %d (at most %d)", kind, t.Name, len(t.Shape), maxMetaRank)
		}
		fixed := int64(1)
		for _, d := range t.Shape {
			if d < -1 {
				return nil, infergate.Errorf(infergate.EInvalid, "model metadata: %s %q has dimension %d (want -1 or >= 0)", kind, t.Name, d)
			}
			if d > 0 {
				if d > maxFixedElements/fixed {
					return nil, infergate.Errorf(infergate.EInvalid, "model metadata: %s %q shape %v is too large", kind, t.Name, t.Shape)
				}
				fixed *= d
			}
		}
		out[i] = infergate.TensorSpec{Name: t.Name, DataType: dt, Shape: t.Shape}
	}
	return out, nil
}

// truncate shortens an upstream string for a message.
func truncate(s string) string {
	const limit = 512
	if len(s) <= limit {
		return s
	}
	i := limit
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}
