package remote

import (
	"github.com/infergate/infergate/internal/backend"
)

// Dispatcher opens remote paths (see IsRemote) on Remote and every other
// path on Local.
type Dispatcher struct {
	Local  backend.Runtime
	Remote *Runtime
}

var _ backend.Runtime = Dispatcher{}

// Dispatch returns a runtime that opens http:// and https:// paths on
// remote and every other path on local.
func Dispatch(local backend.Runtime, remote *Runtime) Dispatcher {
	return Dispatcher{Local: local, Remote: remote}
}

// Name implements backend.Runtime: the local runtime's name.
//
// NOTE: the engine labels every model with its runtime's Name, so remote
// models are labelled with the local runtime's name too.
func (d Dispatcher) Name() string { return d.Local.Name() }

// Open implements backend.Runtime.
func (d Dispatcher) Open(path string, opts backend.Options) (backend.Session, error) {
	if IsRemote(path) {
		return d.Remote.Open(path, opts)
	}
	return d.Local.Open(path, opts)
}
