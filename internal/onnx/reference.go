package onnx

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/infergate/infergate"
)

// referenceLayers is the reference model's shape: input [N,768], hidden
// layers of 3072, 768, 3072 and 768 units with ReLU, and 16 logits.
var referenceLayers = [...]int{768, 3072, 768, 3072, 768, 16}

// ReferenceSeed is the seed WriteReferenceModel uses.
const ReferenceSeed = 20240601

// Names of the reference model's input and output.
const (
	ReferenceInput  = "input"
	ReferenceOutput = "logits"
)

// ReferenceMLP builds a deterministic multi-layer perceptron in the shape of
// a PyTorch export: one Gemm (transB=1, weight [out,in], bias [out]) per
// layer with a Relu between layers. Weights and biases are drawn from a PCG
// generator seeded with seed, uniform in ±1/sqrt(fan_in), and stored as
// float32 raw_data. The input "input" is FP32 [N,768] with the dim_param "N";
// the output "logits" is FP32 [N,16].
func ReferenceMLP(seed uint64) *Model {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := Graph{Name: "reference_mlp"}
	prev := ReferenceInput
	nLayers := len(referenceLayers) - 1
	for l := 0; l < nLayers; l++ {
		in, out := referenceLayers[l], referenceLayers[l+1]
		bound := 1 / math.Sqrt(float64(in))
		wName := fmt.Sprintf("fc%d.weight", l)
		bName := fmt.Sprintf("fc%d.bias", l)
		g.Initializers = append(g.Initializers,
			uniformTensor(rng, wName, []int64{int64(out), int64(in)}, bound),
			uniformTensor(rng, bName, []int64{int64(out)}, bound))
		gemmOut := fmt.Sprintf("/fc%d/Gemm_output_0", l)
		if l == nLayers-1 {
			gemmOut = ReferenceOutput
		}
		g.Nodes = append(g.Nodes, Node{
			Name:    fmt.Sprintf("/fc%d/Gemm", l),
			OpType:  "Gemm",
			Inputs:  []string{prev, wName, bName},
			Outputs: []string{gemmOut},
			Attributes: []Attribute{
				{Name: "alpha", Type: AttrFloat, F: 1},
				{Name: "beta", Type: AttrFloat, F: 1},
				{Name: "transB", Type: AttrInt, I: 1},
			},
		})
		prev = gemmOut
		if l < nLayers-1 {
			reluOut := fmt.Sprintf("/relu%d/Relu_output_0", l)
			g.Nodes = append(g.Nodes, Node{
				Name:    fmt.Sprintf("/relu%d/Relu", l),
				OpType:  "Relu",
				Inputs:  []string{prev},
				Outputs: []string{reluOut},
			})
			prev = reluOut
		}
	}
	g.Inputs = []ValueInfo{{
		Name: ReferenceInput, ElemType: Float, HasShape: true,
		Shape: []int64{-1, int64(referenceLayers[0])}, DimParams: []string{"N", ""},
	}}
	g.Outputs = []ValueInfo{{
		Name: ReferenceOutput, ElemType: Float, HasShape: true,
		Shape: []int64{-1, int64(referenceLayers[nLayers])}, DimParams: []string{"N", ""},
	}}
	return &Model{
		IRVersion:       8,
		ProducerName:    "infergate",
		ProducerVersion: "1",
		Opsets:          []OpsetID{{Domain: "", Version: 17}},
		Graph:           g,
	}
}

// uniformTensor draws a FLOAT tensor uniform in [-bound, bound).
func uniformTensor(rng *rand.Rand, name string, dims []int64, bound float64) Tensor {
	n := int(infergate.NumElements(dims))
	raw := make([]byte, 4*n)
	b := float32(bound)
	for i := 0; i < n; i++ {
		v := (2*rng.Float32() - 1) * b
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return Tensor{Name: name, ElemType: Float, Dims: dims, RawData: raw}
}

// WriteReferenceModel writes ReferenceMLP(ReferenceSeed) to path
// atomically: it writes a temporary file in the same directory, syncs it and
// renames it over path.
func WriteReferenceModel(path string) error {
	return WriteFileAtomic(path, Encode(ReferenceMLP(ReferenceSeed)))
}

// WriteFileAtomic writes data to path through a synced temporary file in
// the same directory and a rename, so readers see the old file or the whole
// new one. The file's mode is 0644.
func WriteFileAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
