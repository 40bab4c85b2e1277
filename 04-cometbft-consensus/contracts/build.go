// Command contracts builds the validator registry, ValidatorRegistry.sol,
// and puts it where the chain and the code take it from:
//
//	internal/registry/ValidatorRegistry.abi.json  the ABI
//	internal/registry/ValidatorRegistry.bin       the deployed bytecode
//	../genesis.json                               its alloc entry: the code at
//	                                              registry.Address, owner in slot 0
//
// Run it from the stage's directory after changing the source:
//
//	go run ./contracts
//
// It needs Node.js (npx fetches the pinned solc-js, registry.Solc). The
// registry package's tests check that the committed files and genesis.json
// match what this builds.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/registry"
)

func main() {
	if err := build(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func build(ctx context.Context) error {
	src, err := os.ReadFile(filepath.Join("contracts", "ValidatorRegistry.sol"))
	if err != nil {
		return fmt.Errorf("%w (run from 04-cometbft-consensus)", err)
	}
	a, err := registry.Compile(ctx, string(src))
	if err != nil {
		return err
	}
	dir := filepath.Join("internal", "registry")
	if err := os.WriteFile(filepath.Join(dir, "ValidatorRegistry.abi.json"), a.ABI, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ValidatorRegistry.bin"), []byte(a.RuntimeCode+"\n"), 0o644); err != nil {
		return err
	}
	const genesis = "../genesis.json"
	g, err := os.ReadFile(genesis)
	if err != nil {
		return err
	}
	out, err := registry.WithAlloc(g, a.RuntimeCode)
	if err != nil {
		return fmt.Errorf("%s: %w", genesis, err)
	}
	if err := os.WriteFile(genesis, out, 0o644); err != nil {
		return err
	}
	fmt.Printf("ValidatorRegistry: %d bytes of code at %s, owner %s; wrote %s and %s\n",
		(len(a.RuntimeCode)-2)/2, registry.Address, registry.Owner, dir, genesis)
	return nil
}
