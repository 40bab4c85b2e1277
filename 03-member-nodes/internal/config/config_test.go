package config

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	c := Default()
	c.InstanceID = "../etc"
	c.EngineURL = "localhost:8551"
	c.Mode = "fast"
	c.BlockMode = "slow"
	c.RedisAddr = "redis"
	c.PostgresURL = "mysql://x"
	c.Leaders = []string{"0x12"}
	c.LeaseRenew = c.LeaseTTL
	c.AdvertiseURL = "ftp://x"
	c.BlockTime = 0
	c.MaxIdle = -1
	c.BuildWait = -1
	c.MaxBuildWait = 13 * time.Second
	c.MaxDrift = -1
	c.FeeRecipient = "0x12"
	c.HealthAddr = "8080"
	c.LogLevel = "loud"
	err := c.Validate()
	for _, flag := range []string{"--instance-id", "--eth-client-url", "--mode", "--block-time", "--max-idle", "--build-wait", "--max-build-wait", "--max-drift", "--fee-recipient", "--health-addr", "--log-level",
		"--block-mode", "--redis-addr", "--postgres-url", "--leaders", "--lease-renew", "--advertise-url"} {
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("error does not name %s: %v", flag, err)
		}
	}
}

func TestEnvironmentFallbackAndPrecedence(t *testing.T) {
	c := Default()
	cmd := &cobra.Command{Use: "x"}
	c.Bind(cmd)
	if err := cmd.ParseFlags([]string{"--block-mode", "on-demand"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"BLOCK_MODE": "block-time", "BLOCK_TIME": "250ms", "MAX_IDLE": "soon"}
	err := ApplyEnv(cmd, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err == nil || !strings.Contains(err.Error(), `MAX_IDLE="soon"`) {
		t.Fatalf("bad env value not named: %v", err)
	}
	if c.BlockMode != "on-demand" {
		t.Errorf("flag lost to the environment: block mode %s", c.BlockMode)
	}
	if c.BlockTime.String() != "250ms" {
		t.Errorf("environment ignored: block time %s", c.BlockTime)
	}
}

// --redis-url: the forms users give, with TLS and a database; a malformed
// one is refused without printing its password; the log target hides it.
func TestRedisURL(t *testing.T) {
	for _, tc := range []struct {
		url, addr, user, pass string
		db                    int
		tls                   bool
	}{
		{"redis://localhost:6379/0", "localhost:6379", "", "", 0, false},
		{"redis://:hunter2@10.0.0.5:6380/3", "10.0.0.5:6380", "", "hunter2", 3, false},
		{"rediss://app:hunter2@redis.example.com:6390/1", "redis.example.com:6390", "app", "hunter2", 1, true},
	} {
		c := Default()
		c.RedisURL = tc.url
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		o, err := c.RedisOptions()
		if err != nil || o.Addr != tc.addr || o.Username != tc.user || o.Password != tc.pass || o.DB != tc.db || (o.TLSConfig != nil) != tc.tls {
			t.Fatalf("%s: %+v %v", tc.url, o, err)
		}
		if tc.pass != "" && strings.Contains(c.RedisTarget(), tc.pass) {
			t.Fatalf("log target %s shows the password", c.RedisTarget())
		}
	}
	for _, raw := range []string{"http://:hunter2@localhost:6379", "redis://:hunter2@localhost:6379/db9x", "redis://:hunter2@local host:6379",
		"redis://:hun\"ter2@localhost:6379", "redis://:hun\\ter2@localhost:6379", "redis://:hun\tter2@localhost:6379", "redis://u:hunter2%zz@localhost:6379",
		"redis://:hun/ter2@localhost:6379", "redis://:123/hunter2@localhost:6379", "redis://:12?hunter2@localhost"} {
		c := Default()
		c.RedisURL = raw
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "--redis-url") || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "ter2") {
			t.Fatalf("%s: %v", raw, err)
		}
	}
	c := Default()
	c.RedisURL, c.RedisAddr, c.ClusterID = "redis://localhost:6379", "other:6379", "a:b"
	err := c.Validate()
	for _, want := range []string{"not both", "--cluster-id"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error does not say %q: %v", want, err)
		}
	}
}

// k of n: the threshold is between 2 and the number of distinct co-signer
// addresses, or 1 with none; each problem names its flag.
func TestValidateCosigners(t *testing.T) {
	a, b := "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
	for _, c := range []struct {
		cosigners []string
		k         int
		want      string // "" for valid
	}{
		{nil, 1, ""},
		{[]string{a, b}, 2, ""},
		{[]string{a, b}, 3, "--threshold 3: more than the 2 --cosigners"},
		{[]string{a, b}, 1, "--cosigners " + a + "," + b + ": with --threshold 1"},
		{[]string{a, "0x12"}, 2, `--cosigners "0x12": not a 20-byte hex address`},
		{[]string{a, strings.ToLower(a)}, 2, "listed twice"},
		{nil, 0, "--threshold 0: at least 1"},
	} {
		cfg := Default()
		cfg.Cosigners, cfg.Threshold = c.cosigners, c.k
		err := cfg.Validate()
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("--cosigners %v --threshold %d: %v, want %q", c.cosigners, c.k, err, c.want)
		}
	}
	cfg := Default()
	cfg.Cosigners, cfg.Threshold, cfg.AdoptChain = []string{a, b}, 2, true
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--adopt-chain true: an adopted chain's blocks carry no co-signatures") {
		t.Errorf("--adopt-chain with --threshold 2: %v", err)
	}
}
