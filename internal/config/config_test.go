package config

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/batching"
)

// badFiles maps every testdata/*.bad.yaml to a substring of its error.
var badFiles = map[string]string{
	"unknown_field.bad.yaml":          "field adress not found in type config.Config",
	"unknown_model_field.bad.yaml":    "field instance not found in type config.Model",
	"unknown_policy_field.bad.yaml":   "field max_delay not found in type batching.Policy",
	"bad_runtime.bad.yaml":            `runtime: "tensorrt": want auto, onnxruntime or gorun`,
	"negative_price.bad.yaml":         "price_per_instance_hour: -0.5: must be a finite number >= 0",
	"nan_price.bad.yaml":              "price_per_instance_hour: NaN: must be a finite number >= 0",
	"inf_price.bad.yaml":              "price_per_instance_hour: +Inf: must be a finite number >= 0",
	"empty_addr.bad.yaml":             "addr: must be set",
	"bulk_share.bad.yaml":             "bulk_guaranteed_share: 1.5: want 0..1",
	"bulk_instances.bad.yaml":         "bulk_instances: -2: want -1 (none), 0 (as many as instances) or 1..64",
	"small_body.bad.yaml":             "max_body_bytes: 100: must be >= 1024",
	"zero_elements.bad.yaml":          "max_tensor_elements: 0: must be >= 1",
	"duplicate_model.bad.yaml":        `models[2].name: "a" is used twice`,
	"model_without_path.bad.yaml":     "models[0]: path: must be set",
	"model_bad_name.bad.yaml":         `models[0]: name: "a/b": must be non-empty`,
	"instances_negative.bad.yaml":     "models[0]: instances: -1: want 1..64",
	"instances_100.bad.yaml":          "models[0]: instances: 100: want 1..64",
	"threads_300.bad.yaml":            "models[0]: threads: 300: want 0..256",
	"max_batch_5000.bad.yaml":         "models[0]: max_batch_size: 5000: want 1..4096",
	"bad_class.bad.yaml":              "models[0]: classes.realtime: unknown class (want urgent, normal or bulk)",
	"policy_bogus.bad.yaml":           `models[0]: classes.normal: policy "bogus": want single, size, time, hybrid, adaptive or aimd`,
	"time_negative_timeout.bad.yaml":  "models[0]: classes.bulk: batch_timeout must be > 0 for policy time",
	"duration_without_unit.bad.yaml":  "cannot unmarshal !!int `5` into time.Duration",
	"preferred_over_max.bad.yaml":     "models[0]: classes.normal: preferred_batch_sizes: 32 out of 1..16",
	"class_batch_over_model.bad.yaml": "models[0]: classes.bulk: max_batch_size 16: want 1..8",
	"timeout_action_drop.bad.yaml":    `models[0]: classes.urgent: timeout_action "drop": want reject or delay`,
	"bad_mode.bad.yaml":               `models[0]: classes.urgent: mode "interactive": want realtime, hybrid or batch`,
	"two_documents.bad.yaml":          "more than one document",
	"syntax_error.bad.yaml":           "yaml: line",
}

// loadAndValidate is what serve does with --config: Load, then Validate.
func loadAndValidate(path string) (Config, error) {
	c, err := Load(path)
	if err != nil {
		return c, err
	}
	return c, c.Validate()
}

func TestGoodFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/*.good.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no good files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := loadAndValidate(f); err != nil {
				t.Fatalf("%v", err)
			}
		})
	}
}

func TestBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	onDisk := map[string]bool{}
	for _, f := range files {
		name := filepath.Base(f)
		onDisk[name] = true
		t.Run(name, func(t *testing.T) {
			want, ok := badFiles[name]
			if !ok {
				t.Fatalf("testdata/%s has no expected error in badFiles", name)
			}
			_, err := loadAndValidate(f)
			if err == nil {
				t.Fatalf("no error, want one containing %q", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not contain %q", err, want)
			}
		})
	}
	for name := range badFiles {
		if !onDisk[name] {
			t.Errorf("badFiles lists %s, which is not in testdata", name)
		}
	}
}

func TestLoadEmptyKeepsDefaults(t *testing.T) {
	for _, f := range []string{"testdata/empty.good.yaml", "testdata/comments_only.good.yaml"} {
		c, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c, Default()) {
			t.Errorf("%s: %+v, want the defaults %+v", f, c, Default())
		}
	}
	c, err := Load("testdata/markers.good.yaml")
	if err != nil || c.Addr != "127.0.0.1:9001" || c.Runtime != "auto" {
		t.Errorf("markers.good.yaml: %+v, %v", c, err)
	}
	c, err = Load("testdata/repository.good.yaml")
	if err != nil || c.ModelRepository != "./models" || c.Runtime != "gorun" || c.Addr != Default().Addr {
		t.Errorf("repository.good.yaml: %+v, %v", c, err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.yaml")); !os.IsNotExist(err) {
		t.Errorf("err %v, want not-exist", err)
	}
}

func TestLoadFull(t *testing.T) {
	c, err := loadAndValidate("testdata/full.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Addr: "0.0.0.0:9000", DataDir: "/var/lib/infergate", Store: "sqlite", Runtime: "onnxruntime",
		ORTLibrary: "/opt/onnxruntime/lib/libonnxruntime.so", PricePerInstanceHour: 2.5,
		ModelRepository: "/srv/models", MaxBodyBytes: 1 << 20, MaxTensorElements: 100000, BatchLease: 10 * time.Second, BulkGuaranteedShare: 0.25,
		Models: []Model{{
			Name: "mlp", Path: "/srv/mlp/model.onnx", Instances: 2, Threads: 4, BulkInstances: 1, MaxBatchSize: 128, WarmupRuns: -1,
			Classes: map[string]batching.Policy{
				"urgent": {Kind: batching.Single, MaxQueueSize: 16, DefaultTimeout: 250 * time.Millisecond,
					TimeoutAction: batching.Delay, Mode: infergate.ModeRealtime},
				"normal": {Kind: batching.Hybrid, MaxBatchSize: 64, MaxQueueDelay: 2 * time.Millisecond,
					PreferredBatchSizes: []int{16, 32, 64}, MaxQueueSize: 512, DefaultTimeout: 2 * time.Second,
					TimeoutAction: batching.Reject, FillWithBulk: true, Mode: infergate.ModeHybrid},
				"bulk": {Kind: batching.Time, MaxBatchSize: 128, BatchTimeout: 50 * time.Millisecond,
					MaxQueueSize: 10000, Mode: infergate.ModeBatch},
			},
		}, {
			Name: "classifier", Path: "relative/cls.onnx", MaxBatchSize: 1, WarmupRuns: 10,
			Classes: map[string]batching.Policy{"bulk": {Kind: batching.Size, DefaultTimeout: 10 * time.Minute}},
		}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("full.good.yaml:\n got %+v\nwant %+v", c, want)
	}
	// Validate works on copies: the models are not defaulted in place.
	if c.Models[1].Instances != 0 || c.Models[1].Classes["bulk"].MaxBatchSize != 0 {
		t.Errorf("Validate changed the models: %+v", c.Models[1])
	}
}

func TestDecodeKeepsValues(t *testing.T) {
	c := Default()
	c.Addr = "10.0.0.1:1"
	if err := Decode([]byte("runtime: gorun\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.Addr != "10.0.0.1:1" || c.Runtime != "gorun" || c.MaxBodyBytes != Default().MaxBodyBytes {
		t.Errorf("Decode over values: %+v", c)
	}
}

func TestModelDefaults(t *testing.T) {
	m := Model{Name: "m", Path: "m.onnx"}
	m.ModelDefaults()
	if m.Instances != 1 || m.MaxBatchSize != 64 || m.WarmupRuns != 3 || m.Threads != 0 {
		t.Errorf("defaults: %+v", m)
	}
	m = Model{Instances: -1, MaxBatchSize: 7, WarmupRuns: -1, Threads: 2}
	m.ModelDefaults()
	if m.Instances != -1 || m.MaxBatchSize != 7 || m.WarmupRuns != -1 || m.Threads != 2 {
		t.Errorf("set fields changed: %+v", m)
	}
}

// TestValidateDeterministic: with several bad classes, the error names the
// same one every time (map order must not leak into messages).
func TestValidateDeterministic(t *testing.T) {
	m := Model{Name: "m", Path: "m.onnx", Classes: map[string]batching.Policy{}}
	for _, n := range []string{"zeta", "alpha", "mid", "beta", "omega", "x", "y"} {
		m.Classes[n] = batching.Policy{}
	}
	m.ModelDefaults()
	for range 20 {
		if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "classes.alpha:") {
			t.Fatalf("err %v, want the first bad class in name order (alpha)", err)
		}
	}
}

func TestPolicies(t *testing.T) {
	const maxBatch = 64
	def := DefaultPolicies(maxBatch)
	type pols = map[string]batching.Policy
	tests := []struct {
		name    string
		classes pols
		// edit turns the defaults into the expected policies.
		edit func(p *[infergate.NumClasses]batching.Policy)
	}{
		{"none", nil, func(*[infergate.NumClasses]batching.Policy) {}},
		{"empty class keeps the defaults", pols{"urgent": {}, "normal": {}, "bulk": {}}, func(*[infergate.NumClasses]batching.Policy) {}},
		{"one field, the rest kept", pols{"normal": {MaxQueueSize: 10}}, func(p *[infergate.NumClasses]batching.Policy) {
			p[infergate.ClassNormal].MaxQueueSize = 10
		}},
		{"kind", pols{"bulk": {Kind: batching.Size}}, func(p *[infergate.NumClasses]batching.Policy) {
			p[infergate.ClassBulk].Kind = batching.Size
		}},
		{"time gets a 5ms period", pols{"bulk": {Kind: batching.Time}}, func(p *[infergate.NumClasses]batching.Policy) {
			p[infergate.ClassBulk].Kind = batching.Time
			p[infergate.ClassBulk].BatchTimeout = 5 * time.Millisecond
		}},
		{"time keeps its period", pols{"bulk": {Kind: batching.Time, BatchTimeout: time.Second}}, func(p *[infergate.NumClasses]batching.Policy) {
			p[infergate.ClassBulk].Kind = batching.Time
			p[infergate.ClassBulk].BatchTimeout = time.Second
		}},
		{"every field", pols{"urgent": {
			Kind: batching.Size, MaxBatchSize: 4, BatchTimeout: 3 * time.Millisecond, MaxQueueDelay: 7 * time.Millisecond,
			PreferredBatchSizes: []int{2, 4}, MaxQueueSize: 9, DefaultTimeout: time.Minute, TimeoutAction: batching.Delay,
			FillWithBulk: true, Mode: infergate.ModeBatch,
		}}, func(p *[infergate.NumClasses]batching.Policy) {
			p[infergate.ClassUrgent] = batching.Policy{
				Kind: batching.Size, MaxBatchSize: 4, BatchTimeout: 3 * time.Millisecond, MaxQueueDelay: 7 * time.Millisecond,
				PreferredBatchSizes: []int{2, 4}, MaxQueueSize: 9, DefaultTimeout: time.Minute, TimeoutAction: batching.Delay,
				FillWithBulk: true, Mode: infergate.ModeBatch,
			}
		}},
		{"empty preferred list overrides", pols{"normal": {PreferredBatchSizes: []int{}}}, func(p *[infergate.NumClasses]batching.Policy) {
			p[infergate.ClassNormal].PreferredBatchSizes = []int{}
		}},
		// A bool overlay can only switch on: fill_with_bulk: false cannot
		// turn off the normal class's default true (zero means unset).
		{"fill_with_bulk false keeps the default", pols{"normal": {FillWithBulk: false, MaxQueueSize: 3}}, func(p *[infergate.NumClasses]batching.Policy) {
			p[infergate.ClassNormal].MaxQueueSize = 3
		}},
		{"three classes at once", pols{"urgent": {MaxBatchSize: 2}, "normal": {Mode: infergate.ModeBatch}, "bulk": {MaxQueueDelay: time.Second}},
			func(p *[infergate.NumClasses]batching.Policy) {
				p[infergate.ClassUrgent].MaxBatchSize = 2
				p[infergate.ClassNormal].Mode = infergate.ModeBatch
				p[infergate.ClassBulk].MaxQueueDelay = time.Second
			}},
		{"unknown class ignored", pols{"nope": {MaxQueueSize: 1}}, func(*[infergate.NumClasses]batching.Policy) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Model{Name: "m", Path: "m.onnx", MaxBatchSize: maxBatch, Classes: tt.classes}
			want := DefaultPolicies(maxBatch)
			tt.edit(&want)
			if got := m.Policies(); !reflect.DeepEqual(got, want) {
				t.Errorf("Policies():\n got %+v\nwant %+v", got, want)
			}
		})
	}
	if got := DefaultPolicies(maxBatch); !reflect.DeepEqual(got, def) {
		t.Errorf("DefaultPolicies changed by Policies: %+v", got)
	}
	// The defaults are valid and clamp to small models.
	small := DefaultPolicies(4)
	for _, c := range infergate.Classes {
		if err := small[c].Validate(4); err != nil {
			t.Errorf("DefaultPolicies(4)[%s]: %v", c, err)
		}
		if small[c].MaxBatchSize > 4 {
			t.Errorf("DefaultPolicies(4)[%s].MaxBatchSize = %d", c, small[c].MaxBatchSize)
		}
	}
}

// writeFile writes content to dir/rel, creating folders.
func writeFile(t *testing.T, dir, rel, content string) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRepositoryModels(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "alpha/model.onnx", "x")
	writeFile(t, dir, "alpha/config.yaml", "# name and path come from the folder\nname: ignored\npath: /elsewhere.onnx\ninstances: 2\nmax_batch_size: 8\nclasses:\n  bulk:\n    policy: size\n    default_timeout: 1m\n")
	writeFile(t, dir, "beta/model.onnx", "x") // no config.yaml: all defaults
	writeFile(t, dir, "gamma/config.yaml", "instances: 3\n")
	writeFile(t, dir, "gamma/README", "no model.onnx: not a model")
	writeFile(t, dir, "delta/model.onnx", "x")
	writeFile(t, dir, "delta/config.yaml", "") // empty: all defaults
	writeFile(t, dir, "model.onnx", "a file at the top is not a model")
	got, err := RepositoryModels(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []Model{
		{Name: "alpha", Path: filepath.Join(dir, "alpha", "model.onnx"), Instances: 2, MaxBatchSize: 8,
			Classes: map[string]batching.Policy{"bulk": {Kind: batching.Size, DefaultTimeout: time.Minute}}},
		{Name: "beta", Path: filepath.Join(dir, "beta", "model.onnx")},
		{Name: "delta", Path: filepath.Join(dir, "delta", "model.onnx")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("RepositoryModels:\n got %+v\nwant %+v", got, want)
	}
	for i := range got {
		got[i].ModelDefaults()
		if err := got[i].Validate(); err != nil {
			t.Errorf("%s: %v", got[i].Name, err)
		}
	}

	t.Run("bad config", func(t *testing.T) {
		for name, tc := range map[string]struct{ config, want string }{
			"unknown field": {"instances: 2\nbogus: 1\n", "bad/config.yaml: yaml: unmarshal errors:"},
			"syntax":        {"instances: [2\n", "bad/config.yaml: yaml:"},
			"two documents": {"instances: 2\n---\ninstances: 3\n", "bad/config.yaml: yaml: more than one document"},
		} {
			dir := t.TempDir()
			writeFile(t, dir, "good/model.onnx", "x")
			writeFile(t, dir, "bad/model.onnx", "x")
			writeFile(t, dir, "bad/config.yaml", tc.config)
			if ms, err := RepositoryModels(dir); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: models %+v, err %v, want %q", name, ms, err, tc.want)
			}
		}
	})
	t.Run("unreadable config", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, "m/model.onnx", "x")
		if err := os.Mkdir(filepath.Join(dir, "m", "config.yaml"), 0o755); err != nil {
			t.Fatal(err)
		}
		if ms, err := RepositoryModels(dir); err == nil {
			t.Errorf("config.yaml is a folder: models %+v, no error", ms)
		}
	})
	t.Run("missing folder", func(t *testing.T) {
		if _, err := RepositoryModels(filepath.Join(t.TempDir(), "nope")); err == nil || !strings.Contains(err.Error(), "model_repository:") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("empty folder", func(t *testing.T) {
		if ms, err := RepositoryModels(t.TempDir()); err != nil || len(ms) != 0 {
			t.Errorf("models %+v, err %v", ms, err)
		}
	})
}

func FuzzDecode(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed files: %v", err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("models: [{name: m, path: p, classes: {normal: {preferred_batch_sizes: [-1, 0, 99999]}}}]"))
	f.Add([]byte("a: &a [*a, *a]\nb: *a\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := Default()
		if err := Decode(b, &c); err != nil {
			return
		}
		err := c.Validate()
		if err2 := c.Validate(); (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("Validate not deterministic: %v, then %v", err, err2)
		}
		if err != nil {
			return
		}
		// A valid configuration's numbers are usable as they are.
		if !(c.PricePerInstanceHour >= 0) || math.IsInf(c.PricePerInstanceHour, 0) || c.MaxBodyBytes < 1024 || c.MaxTensorElements < 1 {
			t.Fatalf("Validate accepted %+v", c)
		}
		for _, m := range c.Models {
			m.ModelDefaults()
			if m.Instances < 1 || m.MaxBatchSize < 1 {
				t.Fatalf("Validate accepted model %+v", m)
			}
			for _, p := range m.Policies() {
				if err := p.Validate(m.MaxBatchSize); err != nil {
					t.Fatalf("valid model %s has invalid policy %+v: %v", m.Name, p, err)
				}
			}
		}
	})
}

func TestSwitching(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{"ok", "switching:\n  normal:\n    slo: 50ms\n    low_rps: 100\n    high_rps: 400\n    switch_delay: 5s\n    bake_time: 3s\n    steps: [0.2, 0.5, 0.8, 1]\n", ""},
		{"bulk", "switching:\n  bulk:\n    slo: 50ms\n", "switching.bulk: only urgent and normal"},
		{"no slo", "switching:\n  normal:\n    low_rps: 1\n", "switching.normal: slo must be > 0"},
		{"thresholds", "switching:\n  normal:\n    slo: 1s\n    low_rps: 500\n    high_rps: 400\n", "low_rps (500) must be below"},
		{"unknown field", "switching:\n  normal:\n    slo: 1s\n    turbo: 1\n", "turbo"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := decodeValidate(modelDoc(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				sc := c.Models[0].SwitchingConfigs()[infergate.ClassNormal]
				if sc.SLO != 50*time.Millisecond || sc.HighRPS != 400 || len(sc.Steps) != 4 {
					t.Fatalf("decoded %+v", sc)
				}
				return
			}
			wantErrContaining(t, err, tc.wantErr)
		})
	}
}

func TestAutoscale(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{"ok", "autoscale:\n  min_instances: 1\n  max_instances: 4\n  target_utilization: 0.6\n  scale_up_cooldown: 60s\n  slo: 50ms\n", ""},
		{"no max", "autoscale:\n  min_instances: 1\n", "autoscale:"},
		{"min above max", "autoscale:\n  min_instances: 5\n  max_instances: 4\n", "autoscale:"},
		{"too many", "autoscale:\n  max_instances: 65\n", "want at most 64"},
		{"unknown field", "autoscale:\n  max_instances: 4\n  speed: 2\n", "speed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := decodeValidate(modelDoc(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if a := c.Models[0].Autoscale; a == nil || a.MaxInstances != 4 || a.SLO != 50*time.Millisecond {
					t.Fatalf("decoded %+v", a)
				}
				return
			}
			wantErrContaining(t, err, tc.wantErr)
		})
	}
}

func TestAPIKeys(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{"ok", "api_keys:\n- {name: a, key: 0123456789abcdef}\n- {name: ops, key: 0123456789abcdeg, role: admin}\n", ""},
		{"short key", "api_keys:\n- {name: a, key: short}\n", "at least 16"},
		{"same key twice", "api_keys:\n- {name: a, key: 0123456789abcdef}\n- {name: b, key: 0123456789abcdef}\n", "unique"},
		{"same name twice", "api_keys:\n- {name: a, key: 0123456789abcdef}\n- {name: a, key: 0123456789abcdeg}\n", "name"},
		{"no name", "api_keys:\n- {key: 0123456789abcdef}\n", "name"},
		{"bad role", "api_keys:\n- {name: a, key: 0123456789abcdef, role: root}\n", "want user or admin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeValidate(tc.yaml)
			wantErrContaining(t, err, tc.wantErr)
		})
	}
}

func TestStore(t *testing.T) {
	for _, tc := range []struct {
		yaml, want string // want: "" for valid, else a substring of the error
	}{
		{"", ""},
		{"store: sqlite\n", ""},
		{"store: postgres://infergate:secret@db:5432/jobs?sslmode=require\n", ""},
		{"store: postgresql:///jobs?host=/run/postgresql\n", ""},
		{"store: sqlite3\n", `store: "sqlite3": want sqlite or a postgres:// URL`},
		{"store: mysql://u:secret@h/db\n", "store: want sqlite or a postgres:// URL"},
	} {
		c := Default()
		if err := Decode([]byte(tc.yaml), &c); err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.yaml, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		case err != nil && strings.Contains(err.Error(), "secret"):
			t.Errorf("%q: the error shows the password: %v", tc.yaml, err)
		}
	}
}

// modelDoc puts the YAML of one model's fields under a model m.
func modelDoc(fields string) string {
	return "models:\n- name: m\n  path: p\n  " + strings.ReplaceAll(fields, "\n", "\n  ")
}

// decodeValidate decodes doc over the defaults and validates it.
func decodeValidate(doc string) (Config, error) {
	c := Default()
	if err := Decode([]byte(doc), &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// wantErrContaining fails t unless err contains want ("" : err is nil).
func wantErrContaining(t *testing.T, err error, want string) {
	t.Helper()
	if (err == nil) != (want == "") || (err != nil && !strings.Contains(err.Error(), want)) {
		t.Fatalf("err %v, want %q", err, want)
	}
}
