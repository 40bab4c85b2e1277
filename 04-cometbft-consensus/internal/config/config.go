// Package config holds the validator's configuration: one struct with
// defaults, a Validate that names every wrong flag at once, and the cobra
// flag set with environment-variable fallbacks. CometBFT's own settings
// (peers, ports, timeouts, keys) live in the CometBFT home's config.toml.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Config is everything the validator needs besides its CometBFT home.
type Config struct {
	CmtHome     string
	EngineURL   string
	JWTSecret   string
	GenesisPath string
	BuildWait   time.Duration
	Optimistic  bool
	// AllowClockDrift lets consensus.timeout_commit be below 1 s: heights
	// then come faster than one a second, and execution timestamps, whole
	// seconds each above its parent's, run ahead of the wall clock.
	AllowClockDrift bool
	// StallBlocks: /readyz fails once no height was decided for this many
	// block times (timeout_commit, at least 1 s, and timeout_propose
	// each); 0: never.
	StallBlocks  int
	FeeRecipient string
	HealthAddr   string
	LogLevel     string
	LogFormat    string
	// Byzantine makes this validator corrupt the payloads it proposes. For
	// tests of the other validators' ProcessProposal; hidden from --help.
	Byzantine string
}

// Default returns the defaults: the CometBFT home `cometbft init` makes, the
// local network's first geth.
func Default() Config {
	home := ".cometbft"
	if h, err := os.UserHomeDir(); err == nil {
		home = filepath.Join(h, ".cometbft")
	}
	return Config{
		CmtHome:      home,
		EngineURL:    "http://localhost:8551",
		JWTSecret:    "../jwt.hex",
		GenesisPath:  "../genesis.json",
		BuildWait:    200 * time.Millisecond,
		Optimistic:   true,
		StallBlocks:  10,
		FeeRecipient: "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
		HealthAddr:   ":8080",
		LogLevel:     "info",
		LogFormat:    "text",
	}
}

// Validate returns every problem at once, each naming its flag.
func (c Config) Validate() error {
	var errs []error
	bad := func(flag string, v any, why string) { errs = append(errs, fmt.Errorf("--%s %v: %s", flag, v, why)) }
	if c.CmtHome == "" {
		bad("cmt-home", `""`, "must not be empty")
	}
	if u, err := url.Parse(c.EngineURL); err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		bad("eth-client-url", fmt.Sprintf("%q", c.EngineURL), "want an http(s):// or ws(s):// URL")
	}
	if c.BuildWait < 0 {
		bad("build-wait", c.BuildWait, "must not be negative")
	}
	if c.BuildWait > time.Second {
		bad("build-wait", c.BuildWait, "at most 1s: getPayload must come within geth's build window")
	}
	if c.StallBlocks < 0 {
		bad("stall-blocks", c.StallBlocks, "must not be negative (0: never)")
	}
	if !common.IsHexAddress(c.FeeRecipient) {
		bad("fee-recipient", fmt.Sprintf("%q", c.FeeRecipient), "not a 20-byte hex address")
	}
	if _, _, err := net.SplitHostPort(c.HealthAddr); err != nil {
		bad("health-addr", fmt.Sprintf("%q", c.HealthAddr), "want host:port or :port")
	}
	if c.LogLevel != "debug" && c.LogLevel != "info" && c.LogLevel != "warn" && c.LogLevel != "error" {
		bad("log-level", fmt.Sprintf("%q", c.LogLevel), "want debug, info, warn or error")
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log-format", fmt.Sprintf("%q", c.LogFormat), "want text or json")
	}
	if c.Byzantine != "" && c.Byzantine != "invalid" && c.Byzantine != "pad" && c.Byzantine != "params" {
		bad("byzantine", fmt.Sprintf("%q", c.Byzantine), "want invalid, pad or params")
	}
	return errors.Join(errs...)
}

// Bind registers the flags on cmd with c's values as defaults, and records
// the environment variable of each.
func (c *Config) Bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.CmtHome, "cmt-home", c.CmtHome, "CometBFT home: config/config.toml, config/genesis.json, keys, data")
	f.StringVar(&c.EngineURL, "eth-client-url", c.EngineURL, "geth's authenticated Engine API URL (also used for eth_*)")
	f.StringVar(&c.JWTSecret, "jwt-secret", c.JWTSecret, "JWT secret: a file, or 32 bytes as hex with or without 0x")
	f.StringVar(&c.GenesisPath, "genesis", c.GenesisPath, "genesis.json geth was initialised with")
	f.DurationVar(&c.BuildWait, "build-wait", c.BuildWait, "proposer: at least this long between forkchoiceUpdated and getPayload; geth hands out an empty block until its first full one is built")
	f.BoolVar(&c.AllowClockDrift, "allow-clock-drift", c.AllowClockDrift, "run with consensus.timeout_commit below 1s: heights come faster than one a second and execution timestamps run ahead of the wall clock (gethcl_timestamp_drift_seconds)")
	f.IntVar(&c.StallBlocks, "stall-blocks", c.StallBlocks, "/readyz answers 503 once no height was decided for this many block times (timeout_commit, at least 1s, plus timeout_propose each); 0: never")
	f.BoolVar(&c.Optimistic, "optimistic-build", c.Optimistic, "when this validator proposes the next height, have geth build its payload before the proposal is due; best with geth --miner.recommit=100ms (README)")
	f.StringVar(&c.FeeRecipient, "fee-recipient", c.FeeRecipient, "address that receives the priority fees")
	f.StringVar(&c.HealthAddr, "health-addr", c.HealthAddr, "listen address of /metrics, /healthz, /readyz, /status")
	f.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	f.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	f.StringVar(&c.Byzantine, "byzantine", c.Byzantine, "TESTS ONLY, in a binary built with -tags byzantine: propose payloads geth finds invalid (invalid, the default), padded envelopes (pad) or payloads geth's Engine API refuses (params)")
	f.Lookup("byzantine").NoOptDefVal = "invalid"
	_ = f.MarkHidden("byzantine")
	BindEnv(f, map[string]string{
		"cmt-home": "CMT_HOME", "eth-client-url": "ETH_CLIENT_URL", "jwt-secret": "JWT_SECRET",
		"genesis": "GENESIS", "build-wait": "BUILD_WAIT", "allow-clock-drift": "ALLOW_CLOCK_DRIFT", "stall-blocks": "STALL_BLOCKS", "optimistic-build": "OPTIMISTIC_BUILD", "fee-recipient": "FEE_RECIPIENT",
		"health-addr": "HEALTH_ADDR", "log-level": "LOG_LEVEL", "log-format": "LOG_FORMAT",
	})
	// CometBFT's own binaries read the home from CMTHOME: honoured too,
	// after CMT_HOME.
	_ = f.SetAnnotation("cmt-home", "env", []string{"CMT_HOME", "CMTHOME"})
	f.Lookup("cmt-home").Usage = strings.Replace(f.Lookup("cmt-home").Usage, "(env CMT_HOME)", "(env CMT_HOME, or CometBFT's CMTHOME)", 1)
}

// BindEnv records the environment variable each flag of f falls back to,
// and names it in the flag's help.
func BindEnv(f *pflag.FlagSet, vars map[string]string) {
	for name, key := range vars {
		fl := f.Lookup(name)
		fl.Usage += fmt.Sprintf(" (env %s)", key)
		_ = f.SetAnnotation(name, "env", []string{key})
	}
}

// ApplyEnv sets every flag not given on the command line from its
// environment variable (flags win), returning an error per malformed value.
func ApplyEnv(cmd *cobra.Command, lookup func(string) (string, bool)) error {
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		keys := f.Annotations["env"]
		if len(keys) == 0 || f.Changed {
			return
		}
		for _, key := range keys { // the first one set wins
			if v, ok := lookup(key); ok {
				if err := f.Value.Set(v); err != nil {
					errs = append(errs, fmt.Errorf("%s=%q (for --%s): %w", key, v, f.Name, err))
				}
				break
			}
		}
	})
	return errors.Join(errs...)
}
