// Package config holds infergate's configuration: one Config with
// defaults, loaded from YAML, checked by one Validate that names the bad
// field.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/autoscale"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/switcher"
)

// Config is the server's configuration.
type Config struct {
	// Addr is the listen address. Optional. Defaults to 127.0.0.1:8080.
	Addr string `yaml:"addr"`
	// DataDir holds the generated reference model and, later, the job
	// store. Optional. Defaults to ./data.
	DataDir string `yaml:"data_dir"`
	// Store is the job store: sqlite (jobs.db in DataDir, one replica)
	// or a postgres:// or postgresql:// URL (a PostgreSQL database that
	// replicas share). Optional. Defaults to sqlite.
	Store string `yaml:"store"`
	// Runtime is auto (ONNX Runtime when it loads, else the pure-Go
	// executor), onnxruntime or gorun. Optional. Defaults to auto.
	Runtime string `yaml:"runtime"`
	// ORTLibrary is the path of libonnxruntime.so. Optional. Defaults to
	// the fetched copy in the cache folder.
	ORTLibrary string `yaml:"ort_library"`
	// PricePerInstanceHour prices one model instance for one hour of
	// provisioned time, in USD. Optional. Defaults to 0.10.
	PricePerInstanceHour float64 `yaml:"price_per_instance_hour"`
	// ModelRepository is a folder of models/<name>/model.onnx with an
	// optional models/<name>/config.yaml holding a Model. Optional.
	ModelRepository string `yaml:"model_repository"`
	// MaxBodyBytes caps an infer request body. Optional. Defaults to 64 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxTensorElements caps the elements of one input tensor. Optional.
	// Defaults to 16M.
	MaxTensorElements int64 `yaml:"max_tensor_elements"`
	// ComputeNice is the nice value (0..19) of the OS threads that run
	// batches, on Linux. A positive value lets HTTP handling and
	// admission take the CPU first under overload, which keeps urgent
	// latency low while lower classes are shed, at the price of saturation
	// throughput (see docs/benchmarks.md). Optional. Defaults to 0.
	ComputeNice int `yaml:"compute_nice"`
	// BatchLease is how long the batch runner holds the items it takes. A
	// process killed mid-batch leaves its items leased: they run again
	// once the lease expires, so this bounds the time a restart takes to
	// resume. Items still waiting for capacity when it expires are
	// retried. Optional. Defaults to 10s.
	BatchLease time.Duration `yaml:"batch_lease"`
	// BulkGuaranteedShare is the share of the instances' busy time a batch
	// job's bulk work is guaranteed while it is projected to miss its
	// completion window (on top of the bulk instances): the ceiling of what
	// it may take from real-time work. Optional. Defaults to 0.5; 0..1.
	BulkGuaranteedShare float64 `yaml:"bulk_guaranteed_share"`
	// APIKeys, when set, are required on every route but the health
	// checks: a missing or unknown key is 401, a user key on an operator
	// route (metrics, dashboard, events, cost, plan, modes) 403. Files and
	// batches belong to the name of the key that made them; another key
	// gets 404. Without keys the server listens on loopback only.
	APIKeys []APIKey `yaml:"api_keys"`
	// Models are served in addition to the repository's. With neither,
	// the reference model is generated and served as "mlp".
	Models []Model `yaml:"models"`
}

// APIKey is one accepted API key.
type APIKey struct {
	// Name identifies the key's holder, the owner of what it creates.
	Name string `yaml:"name"`
	// Key is the secret sent as "Authorization: Bearer KEY".
	Key string `yaml:"key"`
	// Role is user (default) or admin.
	Role string `yaml:"role"`
}

// Model configures one served model.
type Model struct {
	Name string `yaml:"name"`
	// Path of the ONNX file, or the URL of a model on a KServe v2 server
	// (http://host:8000/v2/models/NAME[/versions/V]) whose batches
	// infergate forwards there.
	Path string `yaml:"path"`
	// Instances is the number of model instances (runtime sessions), each
	// running one batch at a time. Optional. Defaults to 1.
	Instances int `yaml:"instances"`
	// Threads per instance. Optional. 0 lets the runtime choose.
	Threads int `yaml:"threads"`
	// BulkInstances is the number of extra single-threaded sessions that
	// run only bulk batches (batch jobs), on the same cores at idle OS
	// priority, so that
	// bulk work uses exactly the CPU time real-time work leaves and never
	// delays it. They are not extra provisioned capacity: the ledger counts
	// Instances. Optional. 0 means as many as Instances; -1 means none
	// (bulk batches then run on the instances between real-time batches).
	BulkInstances int `yaml:"bulk_instances"`
	// MaxBatchSize is the largest batch formed. Optional. Defaults to 64;
	// 0 after defaults never happens: use 1 for models without a batch
	// dimension.
	MaxBatchSize int `yaml:"max_batch_size"`
	// Classes configures the queue and policy of each class by name
	// (urgent, normal, bulk). Optional; unset fields take the defaults.
	Classes map[string]batching.Policy `yaml:"classes"`
	// WarmupRuns per batch size at startup, which also seed the live
	// latency model. Optional. Defaults to 3; -1 disables warmup.
	WarmupRuns int `yaml:"warmup_runs"`
	// Switching turns on dynamic mode switching for the named classes
	// (urgent, normal): the class's traffic moves between realtime and
	// hybrid on load, latency and cost triggers, gradually, with rollback.
	// Optional; none by default.
	Switching map[string]switcher.Config `yaml:"switching"`
	// Autoscale turns on the autoscaler of the model's instances, between
	// min_instances and max_instances on target utilization, latency and
	// batch-job backlog. Instances is then the starting count. Optional;
	// off by default.
	Autoscale *autoscale.Config `yaml:"autoscale"`
}

// Default returns the configuration used when no file is given.
func Default() Config {
	return Config{
		Addr:                 "127.0.0.1:8080",
		DataDir:              "./data",
		Store:                "sqlite",
		Runtime:              "auto",
		PricePerInstanceHour: 0.10,
		MaxBodyBytes:         64 << 20,
		MaxTensorElements:    16 << 20,
		BatchLease:           10 * time.Second,
		BulkGuaranteedShare:  0.5,
	}
}

// DefaultPolicies are the class policies a model gets unless configured:
// urgent requests in tiny batches with a 1 ms window, normal requests
// dynamically batched with a 5 ms window, bulk in large batches.
func DefaultPolicies(maxBatch int) [infergate.NumClasses]batching.Policy {
	return [infergate.NumClasses]batching.Policy{
		infergate.ClassUrgent: {Kind: batching.Hybrid, MaxBatchSize: min(8, maxBatch), MaxQueueDelay: time.Millisecond,
			MaxQueueSize: 128, DefaultTimeout: time.Second, Mode: infergate.ModeRealtime},
		infergate.ClassNormal: {Kind: batching.Hybrid, MaxBatchSize: min(32, maxBatch), MaxQueueDelay: 5 * time.Millisecond,
			MaxQueueSize: 512, DefaultTimeout: 5 * time.Second, FillWithBulk: true, Mode: infergate.ModeHybrid},
		infergate.ClassBulk: {Kind: batching.Hybrid, MaxBatchSize: maxBatch, MaxQueueDelay: 20 * time.Millisecond,
			MaxQueueSize: 1024, Mode: infergate.ModeBatch},
	}
}

// Load reads a YAML file over the defaults. Unknown fields are errors.
func Load(path string) (Config, error) {
	c := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := Decode(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Decode parses YAML into c, keeping c's values for absent fields.
func Decode(b []byte, c *Config) error {
	return decodeStrict(b, c)
}

// decodeStrict decodes the one YAML document of b into v. Unknown fields
// are errors, and so is a second, non-empty document (it would otherwise
// be silently ignored); an empty input leaves v as it is.
func decodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	for {
		var extra any
		err := dec.Decode(&extra)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if extra != nil {
			return errors.New("yaml: more than one document: put the whole configuration in one")
		}
	}
}

// ModelDefaults fills a model's unset fields.
func (m *Model) ModelDefaults() {
	if m.Instances == 0 {
		m.Instances = 1
	}
	if m.MaxBatchSize == 0 {
		m.MaxBatchSize = 64
	}
	if m.WarmupRuns == 0 {
		m.WarmupRuns = 3
	}
	if m.BulkInstances == 0 {
		m.BulkInstances = m.Instances
		if lp := strings.ToLower(m.Path); strings.HasPrefix(lp, "http://") || strings.HasPrefix(lp, "https://") {
			// A remote model's compute is not on this machine's idle
			// CPU time: bulk-only sessions would buy nothing.
			m.BulkInstances = -1
		}
	}
}

// BulkSessions is the number of bulk-only sessions after defaults.
func (m *Model) BulkSessions() int { return max(m.BulkInstances, 0) }

// Policies returns the model's effective class policies: the defaults with
// the configured fields laid over them.
func (m *Model) Policies() [infergate.NumClasses]batching.Policy {
	out := DefaultPolicies(m.MaxBatchSize)
	for name, p := range m.Classes {
		c, err := infergate.ParseClass(name)
		if err != nil {
			continue // Validate reports it
		}
		d := out[c]
		if p.Kind != "" {
			d.Kind = p.Kind
		}
		if p.MaxBatchSize != 0 {
			d.MaxBatchSize = p.MaxBatchSize
		}
		if p.BatchTimeout != 0 {
			d.BatchTimeout = p.BatchTimeout
		}
		if p.MaxQueueDelay != 0 {
			d.MaxQueueDelay = p.MaxQueueDelay
		}
		if p.PreferredBatchSizes != nil {
			d.PreferredBatchSizes = p.PreferredBatchSizes
		}
		if p.MaxQueueSize != 0 {
			d.MaxQueueSize = p.MaxQueueSize
		}
		if p.DefaultTimeout != 0 {
			d.DefaultTimeout = p.DefaultTimeout
		}
		if p.TimeoutAction != "" {
			d.TimeoutAction = p.TimeoutAction
		}
		if p.TargetLatency != 0 {
			d.TargetLatency = p.TargetLatency
		}
		if p.Mode != "" {
			d.Mode = p.Mode
		}
		d.FillWithBulk = d.FillWithBulk || p.FillWithBulk
		if d.Kind == batching.Time && d.BatchTimeout == 0 {
			d.BatchTimeout = 5 * time.Millisecond
		}
		out[c] = d
	}
	return out
}

// Validate checks the configuration and names the first bad field.
func (c *Config) Validate() error {
	if c.Addr == "" {
		return errors.New("addr: must be set")
	}
	if c.Store != "" && c.Store != "sqlite" && !strings.HasPrefix(c.Store, "postgres://") && !strings.HasPrefix(c.Store, "postgresql://") {
		if strings.Contains(c.Store, "://") {
			return errors.New("store: want sqlite or a postgres:// URL") // not quoted: it may hold a password
		}
		return fmt.Errorf("store: %q: want sqlite or a postgres:// URL", c.Store)
	}
	switch c.Runtime {
	case "", "auto", "onnxruntime", "gorun":
	default:
		return fmt.Errorf("runtime: %q: want auto, onnxruntime or gorun", c.Runtime)
	}
	if !(c.PricePerInstanceHour >= 0) || math.IsInf(c.PricePerInstanceHour, 1) { // NaN and ±Inf too
		return fmt.Errorf("price_per_instance_hour: %g: must be a finite number >= 0", c.PricePerInstanceHour)
	}
	if c.BulkGuaranteedShare < 0 || c.BulkGuaranteedShare > 1 {
		return fmt.Errorf("bulk_guaranteed_share: %v: want 0..1", c.BulkGuaranteedShare)
	}
	if c.ComputeNice < 0 || c.ComputeNice > 19 {
		return fmt.Errorf("compute_nice: %d: want 0..19", c.ComputeNice)
	}
	if c.BatchLease < time.Second {
		return fmt.Errorf("batch_lease: %s: must be >= 1s", c.BatchLease)
	}
	if c.MaxBodyBytes < 1024 {
		return fmt.Errorf("max_body_bytes: %d: must be >= 1024", c.MaxBodyBytes)
	}
	if c.MaxTensorElements < 1 {
		return fmt.Errorf("max_tensor_elements: %d: must be >= 1", c.MaxTensorElements)
	}
	names, keys := map[string]bool{}, map[string]bool{}
	for i, k := range c.APIKeys {
		switch {
		case k.Name == "" || names[k.Name]:
			return fmt.Errorf("api_keys[%d].name: %q: must be set and unique", i, k.Name)
		case len(k.Key) < 16 || keys[k.Key]:
			return fmt.Errorf("api_keys[%d].key: must be unique and at least 16 characters", i)
		case k.Role != "" && k.Role != "user" && k.Role != "admin":
			return fmt.Errorf("api_keys[%d].role: %q: want user or admin", i, k.Role)
		}
		names[k.Name], keys[k.Key] = true, true
	}
	seen := map[string]bool{}
	for i := range c.Models {
		m := c.Models[i]
		m.ModelDefaults()
		if err := m.Validate(); err != nil {
			return fmt.Errorf("models[%d]: %w", i, err)
		}
		if seen[m.Name] {
			return fmt.Errorf("models[%d].name: %q is used twice", i, m.Name)
		}
		seen[m.Name] = true
	}
	return nil
}

// Validate checks one model, after ModelDefaults.
func (m *Model) Validate() error {
	if m.Name == "" || strings.ContainsAny(m.Name, "/ \t\n?#%") {
		return fmt.Errorf("name: %q: must be non-empty without '/', spaces, '?', '#' or '%%'", m.Name)
	}
	if m.Path == "" {
		return errors.New("path: must be set")
	}
	if m.Instances < 1 || m.Instances > 64 {
		return fmt.Errorf("instances: %d: want 1..64", m.Instances)
	}
	if m.Threads < 0 || m.Threads > 256 {
		return fmt.Errorf("threads: %d: want 0..256", m.Threads)
	}
	if m.BulkInstances < -1 || m.BulkInstances > 64 {
		return fmt.Errorf("bulk_instances: %d: want -1 (none), 0 (as many as instances) or 1..64", m.BulkInstances)
	}
	if m.MaxBatchSize < 1 || m.MaxBatchSize > 4096 {
		return fmt.Errorf("max_batch_size: %d: want 1..4096", m.MaxBatchSize)
	}
	for _, name := range slices.Sorted(maps.Keys(m.Classes)) { // sorted: the same error every time
		if _, err := infergate.ParseClass(name); err != nil || (name != "urgent" && name != "normal" && name != "bulk") {
			return fmt.Errorf("classes.%s: unknown class (want urgent, normal or bulk)", name)
		}
	}
	pols := m.Policies()
	for _, c := range infergate.Classes {
		if err := pols[c].Validate(m.MaxBatchSize); err != nil {
			return fmt.Errorf("classes.%s: %w", c, err)
		}
	}
	if m.Autoscale != nil {
		a := m.Autoscale.WithDefaults()
		if err := a.Validate(); err != nil {
			return fmt.Errorf("autoscale: %w", err)
		}
		if a.MaxInstances > 64 {
			return fmt.Errorf("autoscale: max_instances: %d: want at most 64", a.MaxInstances)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(m.Switching)) {
		if name != "urgent" && name != "normal" {
			return fmt.Errorf("switching.%s: only urgent and normal traffic switches modes", name)
		}
		if err := m.Switching[name].Validate(); err != nil {
			return fmt.Errorf("switching.%s: %w", name, err)
		}
	}
	return nil
}

// SwitchingConfigs returns the switching configuration by class.
func (m *Model) SwitchingConfigs() map[infergate.Class]switcher.Config {
	if len(m.Switching) == 0 {
		return nil
	}
	out := map[infergate.Class]switcher.Config{}
	for name, sc := range m.Switching {
		if c, err := infergate.ParseClass(name); err == nil {
			out[c] = sc
		}
	}
	return out
}

// RepositoryModels lists the models of a Triton-like repository folder:
// each subfolder with a model.onnx, configured by its config.yaml if any.
func RepositoryModels(dir string) ([]Model, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("model_repository: %w", err)
	}
	var out []Model
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name(), "model.onnx")
		if _, err := os.Stat(path); err != nil {
			continue
		}
		m := Model{Name: e.Name()}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "config.yaml"))
		switch {
		case err == nil:
			if err := decodeStrict(b, &m); err != nil {
				return nil, fmt.Errorf("%s/config.yaml: %w", e.Name(), err)
			}
		case !errors.Is(err, fs.ErrNotExist):
			// An unreadable config must not be silently replaced by defaults.
			return nil, fmt.Errorf("model_repository: %w", err)
		}
		m.Name, m.Path = e.Name(), path
		out = append(out, m)
	}
	return out, nil
}
