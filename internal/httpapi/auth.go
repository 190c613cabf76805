package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/infergate/infergate"
)

// Role is what an API key may do.
type Role string

// The roles.
const (
	// RoleUser may infer, read models, and manage its own files and
	// batches.
	RoleUser Role = "user"
	// RoleAdmin may also use the operator routes: metrics, the dashboard,
	// events, cost, planning and the mode-switch admin API.
	RoleAdmin Role = "admin"
)

// APIKey is one accepted key. Name identifies its holder: files and batches
// belong to the name of the key that made them.
type APIKey struct {
	Name string `yaml:"name"`
	Key  string `yaml:"key"`
	Role Role   `yaml:"role"`
}

type principal struct {
	name string
	role Role
}

type principalKey struct{}

// keyring maps the SHA-256 of each key to its holder: requests are matched
// by digest, so the keys themselves are not compared byte by byte.
type keyring map[[32]byte]principal

func newKeyring(keys []APIKey) keyring {
	if len(keys) == 0 {
		return nil
	}
	k := keyring{}
	for _, a := range keys {
		role := a.Role
		if role == "" {
			role = RoleUser
		}
		k[sha256.Sum256([]byte(a.Key))] = principal{name: a.Name, role: role}
	}
	return k
}

// authenticate wraps next: with keys configured, every route but the
// health checks needs a known key (401 otherwise), and the operator routes
// need an admin key (403). The key comes as "Authorization: Bearer KEY" or,
// for browsers (the dashboard), as the password of HTTP Basic auth.
func (s *Server) authenticate(next http.Handler) http.Handler {
	if s.keys == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openRoute(r) {
			next.ServeHTTP(w, r)
			return
		}
		p, ok := s.keys[sha256.Sum256([]byte(requestKey(r)))]
		if !ok {
			w.Header().Add("WWW-Authenticate", `Bearer realm="infergate"`)
			w.Header().Add("WWW-Authenticate", `Basic realm="infergate"`)
			s.writeRouteError(w, r, infergate.Errorf(infergate.EUnauth, "missing or unknown API key: send Authorization: Bearer <key>"))
			return
		}
		if adminRoute(r) && p.role != RoleAdmin {
			s.writeRouteError(w, r, infergate.Errorf(infergate.EForbidden, "%s %s needs an admin key; key %q has role %s", r.Method, r.URL.Path, p.name, p.role))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// refuseEncoded answers 415 to a request body with a content encoding
// (gzip, deflate, ...): infergate never decompresses bodies, so a
// compressed body cannot expand past the body limits (no gzip bombs), and
// it is refused with a clear error instead of failing to parse.
func (s *Server) refuseEncoded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if enc := r.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
			s.writeRouteError(w, r, infergate.Errorf(infergate.EUnsupported, "Content-Encoding %q is not accepted: send the body uncompressed", enc))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requestKey extracts the key of a request ("" when none).
func requestKey(r *http.Request) string {
	h := r.Header.Get("Authorization")
	scheme, rest, _ := strings.Cut(h, " ")
	switch strings.ToLower(scheme) {
	case "bearer":
		return strings.TrimSpace(rest)
	case "basic":
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
		if err != nil {
			return ""
		}
		_, pass, _ := strings.Cut(string(b), ":")
		return pass
	}
	return ""
}

// openRoute reports whether r needs no key: the health checks, which
// orchestrators probe without credentials.
func openRoute(r *http.Request) bool {
	switch r.URL.Path {
	case "/v2/health/live", "/v2/health/ready":
		return r.Method == http.MethodGet
	}
	return false
}

// adminRoute reports whether r is an operator route.
func adminRoute(r *http.Request) bool {
	p := r.URL.Path
	switch {
	case p == "/" || p == "/metrics" || p == "/v1/dashboard" || p == "/v1/events" || p == "/v1/cost" || p == "/v1/plan":
		return true
	case strings.HasPrefix(p, "/v1/models/") && (strings.HasSuffix(p, "/modes") || strings.Contains(p, "/modes/")):
		return true
	}
	return false
}

// writeRouteError answers in the shape the route's clients expect: the
// OpenAI error object on the Files and Batches routes, infergate's
// elsewhere.
func (s *Server) writeRouteError(w http.ResponseWriter, r *http.Request, err error) {
	if strings.HasPrefix(r.URL.Path, "/v1/files") || strings.HasPrefix(r.URL.Path, "/v1/batches") {
		s.writeOpenAIError(w, err)
		return
	}
	writeError(w, s.log, err)
}
