package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/spf13/cobra"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/config"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/registry"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/valset"
)

// validatorFlags are the validator subcommands' flags.
type validatorFlags struct {
	rpcURL, cmtRPC, registry        string
	keyFile, keystore, passwordFile string
	wait                            time.Duration
	json                            bool
}

func validatorCmd() *cobra.Command {
	var f validatorFlags
	cmd := &cobra.Command{
		Use:   "validator",
		Short: "Change the validator set through the registry contract, or list it",
		Long: `The validator set changes from the chain: the registry contract (genesis.json,
` + registry.Address.Hex() + `) records the owner's changes, and at each height
every validator hands those of the block just decided to CometBFT, which applies
them two heights later. These commands send the owner's transactions through a
geth's RPC and read the set from CometBFT and from the contract.

A KEY is a CometBFT ed25519 public key: base64 as in priv_validator_key.json's
pub_key.value, hex, or the path of a CometBFT home to read it from.`,
	}
	p := cmd.PersistentFlags()
	p.StringVar(&f.rpcURL, "rpc-url", "http://localhost:8545", "a geth's JSON-RPC URL")
	p.StringVar(&f.cmtRPC, "cmt-rpc", "http://localhost:26657", "a validator's CometBFT RPC: where list reads the set, and add, power and remove check that the change was applied")
	p.StringVar(&f.registry, "registry", registry.Address.Hex(), "the registry contract")
	p.StringVar(&f.keyFile, "key-file", "", "file holding the owner's hex private key")
	p.StringVar(&f.keystore, "keystore", "", "or: the owner's geth keystore file")
	p.StringVar(&f.passwordFile, "password-file", "", "the keystore's password")
	p.DurationVar(&f.wait, "wait", 30*time.Second, "how long to wait for the transaction's receipt, then for CometBFT to apply it")
	config.BindEnv(p, map[string]string{"rpc-url": "ETH_RPC_URL", "cmt-rpc": "CMT_RPC", "registry": "REGISTRY",
		"key-file": "KEY_FILE", "keystore": "KEYSTORE", "password-file": "PASSWORD_FILE", "wait": "WAIT"})
	cmd.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := config.ApplyEnv(cmd, os.LookupEnv); err != nil {
			return err
		}
		if !common.IsHexAddress(f.registry) {
			return fmt.Errorf("--registry %q: not a 20-byte hex address", f.registry)
		}
		return nil
	}
	// Each change names what the key must be now: add a key that is no
	// validator, reweigh or remove one that is.
	change := func(use, short string, args cobra.PositionalArgs, op op) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Args: args, RunE: func(cmd *cobra.Command, args []string) error {
			keys, power := args, "0"
			if op != opRemove {
				keys, power = args[:1], args[1]
			}
			return f.set(cmd.Context(), op, keys, power)
		}}
	}
	add := change("add KEY POWER", "Add a validator with voting power POWER (at least 1)", cobra.ExactArgs(2), opAdd)
	power := change("power KEY POWER", "Set a validator's voting power (at least 1; remove takes it out)", cobra.ExactArgs(2), opPower)
	remove := change("remove KEY [KEY...]", "Remove validators, all at one height (at most a third of the power may change at once)", cobra.MinimumNArgs(1), opRemove)
	list := &cobra.Command{
		Use:   "list",
		Short: "Show the set CometBFT holds beside the registry's, and where they differ",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.list(cmd.Context())
		},
	}
	list.Flags().BoolVar(&f.json, "json", false, "print JSON")
	cmd.AddCommand(add, power, remove, list)
	return cmd
}

// op is a change's kind.
type op int

const (
	opAdd op = iota
	opPower
	opRemove
)

// set sends one transaction that sets every key's power, once CometBFT's
// set shows the keys as op expects them (an added key is no validator, a
// reweighed or removed one is).
func (f validatorFlags) set(ctx context.Context, op op, keyArgs []string, powerArg string) error {
	power, err := strconv.ParseUint(powerArg, 10, 64)
	switch {
	case err != nil:
		return fmt.Errorf("power %q: want a whole number", powerArg)
	case op != opRemove && power == 0:
		return errors.New("power 0: use `validator remove` to take a validator out")
	case power > registry.MaxPower:
		return fmt.Errorf("power %d: at most %d (CometBFT's MaxTotalVotingPower)", power, registry.MaxPower)
	}
	keys := make([][32]byte, len(keyArgs))
	powers := make([]uint64, len(keyArgs))
	for i, a := range keyArgs {
		if keys[i], err = valset.ParseKey(a); err != nil {
			return err
		}
		powers[i] = power
	}
	now, err := valset.Powers(ctx, f.cmtRPC, nil)
	if err != nil {
		return err
	}
	for i, k := range keys {
		switch has := now[k]; {
		case op == opAdd && has > 0:
			return fmt.Errorf("%s is a validator already (power %d): use `validator power`", keyArgs[i], has)
		case op != opAdd && has == 0:
			return fmt.Errorf("%s is not a validator: use `validator add`", keyArgs[i])
		}
	}
	if err := valset.Precheck(ctx, f.cmtRPC, keys, powers); err != nil {
		return err
	}
	signer, err := valset.LoadSigner(f.keyFile, f.keystore, f.passwordFile)
	if err != nil {
		return err
	}
	s, err := valset.NewSender(ctx, f.rpcURL, signer, common.HexToAddress(f.registry), f.wait)
	if err != nil {
		return err
	}
	defer s.Close()
	data := registry.SetPower(keys[0], powers[0])
	if len(keys) > 1 {
		data = registry.SetPowers(keys, powers)
	}
	r, err := s.Send(ctx, data)
	if err != nil {
		return err
	}
	at := int64(r.Block) + 2
	fmt.Printf("included: tx %s in block %d; CometBFT applies it from height %d\n", r.Tx, r.Block, at)
	off, err := valset.Check(ctx, f.cmtRPC, at, keys, powers, f.wait)
	if err != nil {
		return fmt.Errorf("could not check that the validators applied it: %w", err)
	}
	if len(off) > 0 {
		return fmt.Errorf("the validators refused the change (their logs say why; validator list shows the difference): at height %d %s",
			at, strings.Join(off, "; "))
	}
	fmt.Printf("applied: CometBFT's set at height %d has it\n", at)
	return nil
}

func (f validatorFlags) list(ctx context.Context) error {
	height, entries, err := valset.List(ctx, f.cmtRPC, f.rpcURL, common.HexToAddress(f.registry))
	if err != nil {
		return err
	}
	if f.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Height     int64          `json:"height"`
			Validators []valset.Entry `json:"validators"`
		}{height, entries})
	}
	fmt.Printf("CometBFT's set at height %d, beside the registry %s:\n", height, f.registry)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PUB KEY\tADDRESS\tCOMETBFT\tREGISTRY\tSTATUS")
	for _, e := range entries {
		reg := "-"
		if e.InReg {
			reg = strconv.FormatUint(e.Registry, 10)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", e.PubKey, e.Address, e.CometBFT, reg, e.Status)
	}
	return w.Flush()
}
