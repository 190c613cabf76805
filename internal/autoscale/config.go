package autoscale

import (
	"errors"
	"fmt"
	"time"
)

// Defaults filled in by [Config.WithDefaults] for zero fields.
const (
	DefaultMinInstances      = 1
	DefaultTargetUtilization = 0.6
	DefaultTolerance         = 0.1
	DefaultScaleUpCooldown   = 60 * time.Second
	DefaultScaleDownCooldown = 300 * time.Second
	DefaultWindow            = 30 * time.Second
)

// ErrInvalidConfig is wrapped by every error of [Config.Validate].
var ErrInvalidConfig = errors.New("autoscale: invalid config")

// ConfigError is one invalid field of a [Config]. It matches
// [ErrInvalidConfig] under errors.Is.
type ConfigError struct {
	Field string
	Msg   string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("autoscale: invalid config: %s: %s", e.Field, e.Msg)
}

// Is reports whether target is [ErrInvalidConfig].
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Config sets the bounds and the rules of one model's autoscaler. Zero
// fields take the defaults listed on them (see [Config.WithDefaults]).
type Config struct {
	// MinInstances is the fewest instances kept. Optional. Defaults to 1;
	// scale to zero is not supported (utilization says nothing about a
	// model with no instance).
	MinInstances int `yaml:"min_instances" json:"min_instances"`
	// MaxInstances is the most instances ever asked for. Required, >=
	// MinInstances.
	MaxInstances int `yaml:"max_instances" json:"max_instances"`
	// TargetUtilization is the busy share of instance time to aim for, in
	// (0, 1]. Optional. Defaults to 0.6.
	TargetUtilization float64 `yaml:"target_utilization" json:"target_utilization"`
	// Tolerance is the band around the target inside which utilization
	// changes nothing: no change while |util/target - 1| <= Tolerance, in
	// [0, 1). Optional. Defaults to 0.1 (a zero value means the default;
	// use a tiny value such as 1e-9 for no band).
	Tolerance float64 `yaml:"tolerance" json:"tolerance"`
	// ScaleUpCooldown is the least time between any scale change and the
	// next utilization- or backlog-driven scale-up. Optional. Defaults to
	// 60s.
	ScaleUpCooldown time.Duration `yaml:"scale_up_cooldown" json:"scale_up_cooldown"`
	// ScaleDownCooldown is the least time since the last change (or since
	// the controller started) before a scale-down. Optional. Defaults to
	// 300s.
	ScaleDownCooldown time.Duration `yaml:"scale_down_cooldown" json:"scale_down_cooldown"`
	// ScaleDownStabilization is the window, as in the Kubernetes HPA, over
	// which recommendations are remembered: a scale-down goes only to the
	// highest recommendation seen in it. Optional. Defaults to
	// ScaleDownCooldown.
	ScaleDownStabilization time.Duration `yaml:"scale_down_stabilization" json:"scale_down_stabilization"`
	// SLO is the p99 latency target of the real-time classes. A p99 or a
	// queue delay above it scales up at once. Optional. 0 disables the
	// latency trigger.
	SLO time.Duration `yaml:"slo" json:"slo"`
	// LatencyCooldown is the least time between a scale-up and the next
	// latency-driven scale-up: a new instance needs time to load and the
	// measured p99 trails the change, so without it the trigger would add
	// an instance every tick until the first one is warm. Optional.
	// Defaults to Window.
	LatencyCooldown time.Duration `yaml:"latency_cooldown" json:"latency_cooldown"`
	// Window is the time constant of the exponentially weighted moving
	// average that smooths the busy time. Optional. Defaults to 30s.
	Window time.Duration `yaml:"window" json:"window"`
	// InstancePricePerHour prices one more instance (USD per hour) for the
	// backlog trigger. Optional. 0 means instances are free, so every job
	// at risk is worth one.
	InstancePricePerHour float64 `yaml:"-" json:"-"`
}

// WithDefaults returns c with its zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	if c.MinInstances == 0 {
		c.MinInstances = DefaultMinInstances
	}
	if c.TargetUtilization == 0 {
		c.TargetUtilization = DefaultTargetUtilization
	}
	if c.Tolerance == 0 {
		c.Tolerance = DefaultTolerance
	}
	if c.ScaleUpCooldown == 0 {
		c.ScaleUpCooldown = DefaultScaleUpCooldown
	}
	if c.ScaleDownCooldown == 0 {
		c.ScaleDownCooldown = DefaultScaleDownCooldown
	}
	if c.ScaleDownStabilization == 0 {
		c.ScaleDownStabilization = c.ScaleDownCooldown
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.LatencyCooldown == 0 {
		c.LatencyCooldown = c.Window
	}
	return c
}

// Validate reports every invalid field of c (after defaults) joined; each
// is a *[ConfigError].
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if c.MinInstances < 1 {
		bad("MinInstances", "must be >= 1, got %d", c.MinInstances)
	}
	if c.MaxInstances < 1 {
		bad("MaxInstances", "must be >= 1, got %d", c.MaxInstances)
	} else if c.MinInstances > c.MaxInstances {
		bad("MaxInstances", "must be >= MinInstances (%d), got %d", c.MinInstances, c.MaxInstances)
	}
	if !(c.TargetUtilization > 0 && c.TargetUtilization <= 1) {
		bad("TargetUtilization", "must be in (0, 1], got %g", c.TargetUtilization)
	}
	if !(c.Tolerance >= 0 && c.Tolerance < 1) {
		bad("Tolerance", "must be in [0, 1), got %g", c.Tolerance)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"ScaleUpCooldown", c.ScaleUpCooldown},
		{"ScaleDownCooldown", c.ScaleDownCooldown},
		{"ScaleDownStabilization", c.ScaleDownStabilization},
		{"SLO", c.SLO},
		{"LatencyCooldown", c.LatencyCooldown},
		{"Window", c.Window},
	} {
		if d.v < 0 {
			bad(d.name, "must not be negative, got %v", d.v)
		}
	}
	if !(c.InstancePricePerHour >= 0) {
		bad("InstancePricePerHour", "must not be negative, got %g", c.InstancePricePerHour)
	}
	return errors.Join(errs...)
}
