package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// Solc is the compiler the committed bytecode was built with: solc-js from
// the npm registry, run with npx, so that a machine with Node.js needs
// nothing else. The version and settings are part of the build: change
// either and the bytecode, hence genesis.json, changes.
const Solc = "solc@0.8.30"

// Artifact is what the build produces from the source.
type Artifact struct {
	ABI         json.RawMessage
	RuntimeCode string // hex, 0x-prefixed: the code genesis.json allocates
}

// Compile builds source (the text of ValidatorRegistry.sol) with Solc,
// optimised, for the Cancun EVM, and without the metadata hash: the code's
// CBOR tail then names only the compiler, and a comment edited in the
// source leaves the bytecode, and genesis.json, as they were.
func Compile(ctx context.Context, source string) (Artifact, error) {
	in := map[string]any{
		"language": "Solidity",
		"sources":  map[string]any{"ValidatorRegistry.sol": map[string]string{"content": source}},
		"settings": map[string]any{
			"optimizer":       map[string]any{"enabled": true, "runs": 200},
			"evmVersion":      "cancun",
			"metadata":        map[string]string{"bytecodeHash": "none"},
			"outputSelection": map[string]any{"*": map[string][]string{"ValidatorRegistry": {"abi", "evm.deployedBytecode.object"}}},
		},
	}
	b, err := json.Marshal(in)
	if err != nil {
		return Artifact{}, err
	}
	cmd := exec.CommandContext(ctx, "npx", "--yes", Solc, "--standard-json")
	cmd.Stdin = bytes.NewReader(b)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Artifact{}, fmt.Errorf("npx %s --standard-json: %v: %s", Solc, err, strings.TrimSpace(stderr.String()))
	}
	// solc-js may print lines before the JSON (npx's notices): take the
	// object that starts at the first '{'.
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	var res struct {
		Errors []struct {
			Severity         string `json:"severity"`
			FormattedMessage string `json:"formattedMessage"`
		} `json:"errors"`
		Contracts map[string]map[string]struct {
			ABI json.RawMessage `json:"abi"`
			EVM struct {
				DeployedBytecode struct {
					Object string `json:"object"`
				} `json:"deployedBytecode"`
			} `json:"evm"`
		} `json:"contracts"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return Artifact{}, fmt.Errorf("solc's output: %w", err)
	}
	var errs []string
	for _, e := range res.Errors {
		if e.Severity == "error" {
			errs = append(errs, e.FormattedMessage)
		}
	}
	if len(errs) > 0 {
		return Artifact{}, fmt.Errorf("solc: %s", strings.Join(errs, "\n"))
	}
	c, ok := res.Contracts["ValidatorRegistry.sol"]["ValidatorRegistry"]
	if !ok || c.EVM.DeployedBytecode.Object == "" {
		return Artifact{}, fmt.Errorf("solc's output has no ValidatorRegistry contract")
	}
	var abi bytes.Buffer
	if err := json.Indent(&abi, c.ABI, "", "  "); err != nil {
		return Artifact{}, err
	}
	abi.WriteByte('\n')
	return Artifact{ABI: abi.Bytes(), RuntimeCode: "0x" + c.EVM.DeployedBytecode.Object}, nil
}
