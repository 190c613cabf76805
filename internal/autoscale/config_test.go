package autoscale

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		fields []string // invalid fields reported; none = valid
	}{
		{name: "defaults with max", cfg: Config{MaxInstances: 4}},
		{name: "min equals max", cfg: Config{MinInstances: 3, MaxInstances: 3}},
		{name: "target one", cfg: Config{MaxInstances: 2, TargetUtilization: 1}},
		{name: "missing max", cfg: Config{}, fields: []string{"MaxInstances"}},
		{name: "min above max", cfg: Config{MinInstances: 5, MaxInstances: 4}, fields: []string{"MaxInstances"}},
		{name: "negative min", cfg: Config{MinInstances: -1, MaxInstances: 4}, fields: []string{"MinInstances"}},
		{name: "target above one", cfg: Config{MaxInstances: 4, TargetUtilization: 1.2}, fields: []string{"TargetUtilization"}},
		{name: "negative target", cfg: Config{MaxInstances: 4, TargetUtilization: -0.5}, fields: []string{"TargetUtilization"}},
		{name: "tolerance one", cfg: Config{MaxInstances: 4, Tolerance: 1}, fields: []string{"Tolerance"}},
		{name: "negative tolerance", cfg: Config{MaxInstances: 4, Tolerance: -0.1}, fields: []string{"Tolerance"}},
		{name: "negative up cooldown", cfg: Config{MaxInstances: 4, ScaleUpCooldown: -time.Second}, fields: []string{"ScaleUpCooldown"}},
		{name: "negative down cooldown", cfg: Config{MaxInstances: 4, ScaleDownCooldown: -time.Second},
			fields: []string{"ScaleDownCooldown", "ScaleDownStabilization"}}, // the stabilization defaults to it
		{name: "negative stabilization", cfg: Config{MaxInstances: 4, ScaleDownStabilization: -time.Second}, fields: []string{"ScaleDownStabilization"}},
		{name: "negative slo", cfg: Config{MaxInstances: 4, SLO: -time.Millisecond}, fields: []string{"SLO"}},
		{name: "negative window", cfg: Config{MaxInstances: 4, Window: -time.Second},
			fields: []string{"LatencyCooldown", "Window"}}, // the latency cooldown defaults to it
		{name: "negative latency cooldown", cfg: Config{MaxInstances: 4, LatencyCooldown: -time.Second}, fields: []string{"LatencyCooldown"}},
		{name: "negative price", cfg: Config{MaxInstances: 4, InstancePricePerHour: -1}, fields: []string{"InstancePricePerHour"}},
		{name: "several", cfg: Config{MinInstances: 3, MaxInstances: 2, TargetUtilization: 2},
			fields: []string{"MaxInstances", "TargetUtilization"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewController(tt.cfg)
			if len(tt.fields) == 0 {
				if err != nil {
					t.Fatalf("NewController: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
			var got []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ce *ConfigError
				if !errors.As(e, &ce) {
					t.Fatalf("error %v is not a *ConfigError", e)
				}
				got = append(got, ce.Field)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.fields) {
				t.Errorf("invalid fields = %v, want %v (err: %v)", got, tt.fields, err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	got := mustController(t, Config{MaxInstances: 4}).Config()
	want := Config{
		MinInstances: 1, MaxInstances: 4, TargetUtilization: 0.6, Tolerance: 0.1,
		ScaleUpCooldown: 60 * time.Second, ScaleDownCooldown: 300 * time.Second, ScaleDownStabilization: 300 * time.Second,
		Window: 30 * time.Second, LatencyCooldown: 30 * time.Second,
	}
	if got != want {
		t.Errorf("defaults = %+v, want %+v", got, want)
	}
}
