// Package config holds the node's configuration: one struct with defaults,
// a Validate that names every wrong flag at once, and the cobra flag set with
// environment-variable fallbacks.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Config is everything the node needs to start.
type Config struct {
	InstanceID   string
	EngineURL    string
	JWTSecret    string
	GenesisPath  string
	Mode         string // leader (a candidate) or member
	BlockMode    string // block-time or on-demand
	BlockTime    time.Duration
	MaxIdle      time.Duration
	BuildWait    time.Duration
	MaxBuildWait time.Duration
	MaxDrift     time.Duration
	FeeRecipient string
	HealthAddr   string
	AdvertiseURL string // how other nodes reach this node's HTTP API
	RedisAddr    string
	// RedisURL, when set, takes the place of RedisAddr:
	// redis://[user:password@]host:port/db, or rediss:// for TLS.
	RedisURL string
	// ClusterID starts every Redis key and channel of the cluster, so that
	// clusters sharing one Redis never see each other.
	ClusterID   string
	PostgresURL string
	SignerKey   string // the leader's secp256k1 key: a file or hex
	// SignerKeystore, when set, is the leader's key as an encrypted geth
	// keystore file, decrypted with the password in SignerPasswordFile;
	// it takes the place of SignerKey.
	SignerKeystore, SignerPasswordFile string
	Leaders                            []string // addresses whose signed blocks members accept
	// Cosigners and Threshold make blocks k-of-n: with Threshold above 1,
	// a block is final only with the co-signatures of Threshold distinct
	// Cosigners, gathered by the leader within CosignTimeout. A node whose
	// key is listed co-signs the blocks it executes.
	Cosigners     []string
	Threshold     int
	CosignTimeout time.Duration
	LeaseTTL      time.Duration
	LeaseRenew    time.Duration
	// AdoptChain lets a candidate import the blocks its geth finalized that
	// the cluster store lacks: a chain a single node made (stage 2).
	AdoptChain bool
	LogLevel   string
	LogFormat  string
}

// DevSignerKey is the first well-known Foundry/Anvil dev key, the default
// --signer-key so that the tutorial's commands run as they are. It is public:
// generate your own for anything real.
const DevSignerKey = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

// Default returns the defaults: a leader candidate making a block every
// second against the local network's geth, Redis and cluster PostgreSQL.
func Default() Config {
	return Config{
		InstanceID:    "node-1",
		EngineURL:     "http://localhost:8551",
		JWTSecret:     "../jwt.hex",
		GenesisPath:   "../genesis.json",
		Mode:          "leader",
		BlockMode:     "block-time",
		BlockTime:     time.Second,
		MaxIdle:       0,
		BuildWait:     time.Millisecond,
		MaxBuildWait:  2500 * time.Millisecond,
		MaxDrift:      10 * time.Second,
		FeeRecipient:  "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
		HealthAddr:    ":8080",
		RedisAddr:     "localhost:6379",
		ClusterID:     "consensus",
		PostgresURL:   "postgres://postgres:postgres@localhost:5432/consensus?sslmode=disable",
		SignerKey:     DevSignerKey,
		Leaders:       []string{"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"},
		Threshold:     1,
		CosignTimeout: time.Second,
		LeaseTTL:      2 * time.Second,
		LeaseRenew:    500 * time.Millisecond,
		LogLevel:      "info",
		LogFormat:     "text",
	}
}

// maxBuildWait: geth stops working on a payload 12 s after it started
// (miner/payload_building.go), and returns only what it had by then.
const maxBuildWait = 12 * time.Second

var instanceIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Advertise returns the URL other nodes reach this node's HTTP API at.
func (c Config) Advertise() string {
	if c.AdvertiseURL != "" {
		return strings.TrimSuffix(c.AdvertiseURL, "/")
	}
	host, port, _ := net.SplitHostPort(c.HealthAddr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// Validate returns every problem at once, each naming its flag. It is one
// check per flag, read top to bottom: longer than most functions here, and
// clearer so than split.
func (c Config) Validate() error {
	var errs []error
	bad := func(flag string, v any, why string) { errs = append(errs, fmt.Errorf("--%s %v: %s", flag, v, why)) }
	if !instanceIDPattern.MatchString(c.InstanceID) {
		bad("instance-id", fmt.Sprintf("%q", c.InstanceID), "letters, digits, '.', '_' and '-', at most 63")
	}
	if u, err := url.Parse(c.EngineURL); err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		bad("eth-client-url", fmt.Sprintf("%q", c.EngineURL), "want an http(s):// or ws(s):// URL")
	}
	if c.Mode != "leader" && c.Mode != "member" {
		bad("mode", fmt.Sprintf("%q", c.Mode), "want leader (a candidate in the election) or member")
	}
	if c.BlockMode != "block-time" && c.BlockMode != "on-demand" {
		bad("block-mode", fmt.Sprintf("%q", c.BlockMode), "want block-time or on-demand")
	}
	if c.BlockTime <= 0 {
		bad("block-time", c.BlockTime, "must be positive")
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"max-idle", c.MaxIdle}, {"build-wait", c.BuildWait}, {"max-drift", c.MaxDrift}} {
		if d.v < 0 {
			bad(d.flag, d.v, "must not be negative")
		}
	}
	if c.BuildWait > time.Second {
		bad("build-wait", c.BuildWait, "at most 1s: getPayload must come within geth's build window")
	}
	if c.MaxBuildWait < c.BuildWait || c.MaxBuildWait > maxBuildWait {
		bad("max-build-wait", c.MaxBuildWait, fmt.Sprintf("want between --build-wait (%s) and %s, past which geth abandons a payload", c.BuildWait, maxBuildWait))
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
	if c.AdvertiseURL != "" {
		if u, err := url.Parse(c.AdvertiseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("advertise-url", fmt.Sprintf("%q", c.AdvertiseURL), "want an http(s):// URL")
		}
	}
	if _, _, err := net.SplitHostPort(c.RedisAddr); err != nil {
		bad("redis-addr", fmt.Sprintf("%q", c.RedisAddr), "want host:port")
	}
	if c.RedisURL != "" {
		if _, err := redis.ParseURL(c.RedisURL); err != nil {
			bad("redis-url", "(hidden)", "want redis://[user:password@]host:port/db or rediss:// (TLS): "+redactURLError(err, c.RedisURL))
		}
		if c.RedisAddr != Default().RedisAddr {
			bad("redis-addr", fmt.Sprintf("%q", c.RedisAddr), "give --redis-url or --redis-addr, not both")
		}
	}
	if !instanceIDPattern.MatchString(c.ClusterID) {
		bad("cluster-id", fmt.Sprintf("%q", c.ClusterID), "letters, digits, '.', '_' and '-', at most 63")
	}
	if u, err := url.Parse(c.PostgresURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		bad("postgres-url", "(hidden)", "want postgres://user:password@host:port/db")
	}
	if c.SignerKeystore != "" && c.SignerPasswordFile == "" {
		bad("signer-password-file", `""`, "--signer-keystore needs the file holding its password")
	}
	if c.Mode == "leader" && c.SignerKey == "" && c.SignerKeystore == "" {
		bad("signer-key", `""`, "a leader signs its blocks: give a key file or hex")
	}
	if len(c.Leaders) == 0 {
		bad("leaders", `""`, "name at least one leader address")
	}
	for _, a := range c.Leaders {
		if !common.IsHexAddress(a) {
			bad("leaders", fmt.Sprintf("%q", a), "not a 20-byte hex address")
		}
	}
	for i, a := range c.Cosigners {
		switch {
		case !common.IsHexAddress(a):
			bad("cosigners", fmt.Sprintf("%q", a), "not a 20-byte hex address")
		case slices.ContainsFunc(c.Cosigners[:i], func(b string) bool { return common.HexToAddress(a) == common.HexToAddress(b) }):
			bad("cosigners", a, "listed twice")
		}
	}
	switch {
	case c.Threshold < 1:
		bad("threshold", c.Threshold, "at least 1")
	case c.Threshold == 1 && len(c.Cosigners) > 0:
		bad("cosigners", strings.Join(c.Cosigners, ","), "with --threshold 1 the leader's signature alone makes a block final: give --threshold 2 or more")
	case c.Threshold > 1 && c.Threshold > len(c.Cosigners):
		bad("threshold", c.Threshold, fmt.Sprintf("more than the %d --cosigners", len(c.Cosigners)))
	}
	if c.Threshold > 1 && c.AdoptChain {
		bad("adopt-chain", true, "an adopted chain's blocks carry no co-signatures, and members with --threshold above 1 would refuse them: adopt with --threshold 1")
	}
	if c.CosignTimeout <= 0 {
		bad("cosign-timeout", c.CosignTimeout, "must be positive")
	}
	if c.LeaseTTL < 100*time.Millisecond {
		bad("lease-ttl", c.LeaseTTL, "at least 100ms")
	}
	if c.AdoptChain && c.Mode != "leader" {
		bad("adopt-chain", true, "only a leader candidate adopts a chain: members sync it from the cluster")
	}
	if c.LeaseRenew <= 0 || c.LeaseRenew > c.LeaseTTL/3 {
		bad("lease-renew", c.LeaseRenew, fmt.Sprintf("must be positive and at most a third of --lease-ttl (%s)", c.LeaseTTL))
	}
	return errors.Join(errs...)
}

// Bind registers the flags on cmd with c's values as defaults, and records
// the environment variable of each.
func (c *Config) Bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.InstanceID, "instance-id", c.InstanceID, "name of this node: logs, lease holder, node directory in Redis")
	f.StringVar(&c.EngineURL, "eth-client-url", c.EngineURL, "geth's authenticated Engine API URL (also used for eth_* and the pending-transaction subscription)")
	f.StringVar(&c.JWTSecret, "jwt-secret", c.JWTSecret, "JWT secret: a file, or 32 bytes as hex with or without 0x")
	f.StringVar(&c.GenesisPath, "genesis", c.GenesisPath, "genesis.json geth was initialised with")
	f.StringVar(&c.Mode, "mode", c.Mode, "leader (a candidate: produces while it holds the Redis lease, follows otherwise) or member (follows, never produces)")
	f.StringVar(&c.BlockMode, "block-mode", c.BlockMode, "block-time (a block every --block-time) or on-demand (a block when transactions are pending)")
	f.DurationVar(&c.BlockTime, "block-time", c.BlockTime, "time between blocks in block-time mode")
	f.DurationVar(&c.MaxIdle, "max-idle", c.MaxIdle, "on-demand: an empty heartbeat block after this long without one; 0 = never")
	f.DurationVar(&c.BuildWait, "build-wait", c.BuildWait, "base wait between forkchoiceUpdated and getPayload (the floor of the learnt wait, which grows with pending transactions)")
	f.DurationVar(&c.MaxBuildWait, "max-build-wait", c.MaxBuildWait, "most the learnt wait may grow to; keep it above geth's --miner.recommit (2s by default), after which geth seals what it has")
	f.DurationVar(&c.MaxDrift, "max-drift", c.MaxDrift, "pause production while block timestamps would run further ahead of the wall clock")
	f.StringVar(&c.FeeRecipient, "fee-recipient", c.FeeRecipient, "address that receives the priority fees")
	f.StringVar(&c.HealthAddr, "health-addr", c.HealthAddr, "listen address of the HTTP API: /blocks, /status, /metrics, /healthz, /readyz")
	f.StringVar(&c.AdvertiseURL, "advertise-url", c.AdvertiseURL, "URL other nodes reach this node's HTTP API at (default http://127.0.0.1:<health port>)")
	f.StringVar(&c.RedisAddr, "redis-addr", c.RedisAddr, "Redis host:port: the leader lease, block notices, node directory")
	f.StringVar(&c.RedisURL, "redis-url", c.RedisURL, "Redis as a URL, in place of --redis-addr: redis://[user:password@]host:port/db, rediss:// for TLS")
	f.StringVar(&c.ClusterID, "cluster-id", c.ClusterID, "prefix of every Redis key and channel: clusters sharing one Redis need different ids")
	f.StringVar(&c.PostgresURL, "postgres-url", c.PostgresURL, "block store: the cluster database for leaders, the member's own database for members")
	f.StringVar(&c.SignerKey, "signer-key", c.SignerKey, "leader's secp256k1 key, a file or hex (default: the public Anvil dev key #0, dev only)")
	f.StringVar(&c.SignerKeystore, "signer-keystore", c.SignerKeystore, "leader's key as an encrypted geth keystore file (geth account new, cast wallet import); takes the place of --signer-key")
	f.StringVar(&c.SignerPasswordFile, "signer-password-file", c.SignerPasswordFile, "file holding the --signer-keystore password")
	f.StringSliceVar(&c.Leaders, "leaders", c.Leaders, "comma-separated addresses whose signed blocks are accepted")
	f.StringSliceVar(&c.Cosigners, "cosigners", c.Cosigners, "comma-separated co-signer addresses: with --threshold k above 1, a block is final only with k of their signatures (a node whose --signer-key is listed co-signs)")
	f.IntVar(&c.Threshold, "threshold", c.Threshold, "co-signatures a block needs (k of --cosigners); 1: the leader's signature alone, as without --cosigners")
	f.DurationVar(&c.CosignTimeout, "cosign-timeout", c.CosignTimeout, "how long a leader waits for a block's co-signatures; without them it releases its lease at its next attempt (its own key cannot sign a second block at that height in its epoch) or, when its key is not listed, after half the --lease-ttl")
	f.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "leader lease length: a dead leader is replaced within about this long")
	f.DurationVar(&c.LeaseRenew, "lease-renew", c.LeaseRenew, "how often the leader renews its lease and candidates try to take it")
	f.BoolVar(&c.AdoptChain, "adopt-chain", c.AdoptChain, "import the blocks geth finalized that the cluster store lacks (a chain stage 2 made), signed by this leader, instead of refusing to run; once, on the first leader")
	f.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	f.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	BindEnv(f, map[string]string{
		"instance-id": "INSTANCE_ID", "eth-client-url": "ETH_CLIENT_URL", "jwt-secret": "JWT_SECRET",
		"genesis": "GENESIS", "mode": "MODE", "block-mode": "BLOCK_MODE", "block-time": "BLOCK_TIME",
		"max-idle": "MAX_IDLE", "build-wait": "BUILD_WAIT", "max-build-wait": "MAX_BUILD_WAIT", "max-drift": "MAX_DRIFT",
		"fee-recipient": "FEE_RECIPIENT", "health-addr": "HEALTH_ADDR", "advertise-url": "ADVERTISE_URL",
		"redis-addr": "REDIS_ADDR", "redis-url": "REDIS_URL", "cluster-id": "CLUSTER_ID", "postgres-url": "POSTGRES_URL", "signer-key": "SIGNER_KEY", "signer-keystore": "SIGNER_KEYSTORE", "signer-password-file": "SIGNER_PASSWORD_FILE", "leaders": "LEADERS", "cosigners": "COSIGNERS", "threshold": "THRESHOLD", "cosign-timeout": "COSIGN_TIMEOUT",
		"lease-ttl": "LEASE_TTL", "lease-renew": "LEASE_RENEW", "adopt-chain": "ADOPT_CHAIN", "log-level": "LOG_LEVEL", "log-format": "LOG_FORMAT",
	})
}

// RedisOptions returns the client options --redis-url or --redis-addr give.
func (c Config) RedisOptions() (*redis.Options, error) {
	if c.RedisURL == "" {
		return &redis.Options{Addr: c.RedisAddr}, nil
	}
	o, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("--redis-url: %s", redactURLError(err, c.RedisURL))
	}
	return o, nil
}

// RedisTarget names the Redis server for logs: the address, or the URL
// without its password.
func (c Config) RedisTarget() string {
	if c.RedisURL == "" {
		return c.RedisAddr
	}
	u, err := url.Parse(c.RedisURL)
	if err != nil {
		return "(malformed --redis-url)"
	}
	return u.Redacted()
}

// redactURLError is err's text without raw's credentials. url and redis
// errors quote what they could not parse, whole or in part, escaped or not,
// and a URL that does not parse has no password to look up: when raw has
// credentials (anything between "://" and an '@'), the error's own text is
// left out.
func redactURLError(err error, raw string) string {
	if i := strings.Index(raw, "://"); i >= 0 && strings.Contains(raw[i+3:], "@") {
		return "malformed (details hidden: they would show its credentials): check the scheme, that the password is percent-encoded, host:port and /db"
	}
	msg := strings.ReplaceAll(err.Error(), strconv.Quote(raw), `"(hidden)"`)
	return strings.ReplaceAll(msg, raw, "(hidden)")
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
		if v, ok := lookup(keys[0]); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q (for --%s): %w", keys[0], v, f.Name, err))
			}
		}
	})
	return errors.Join(errs...)
}
