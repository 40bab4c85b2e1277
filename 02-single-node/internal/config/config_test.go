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
	c.BlockMode = "fast"
	c.BlockTime = 0
	c.MaxIdle = -1
	c.BuildWait = -1
	c.MaxBuildWait = 13 * time.Second
	c.MaxDrift = -1
	c.FeeRecipient = "0x12"
	c.HealthAddr = "8080"
	c.LogLevel = "loud"
	err := c.Validate()
	for _, flag := range []string{"--instance-id", "--eth-client-url", "--block-mode", "--block-time", "--max-idle", "--build-wait", "--max-build-wait", "--max-drift", "--fee-recipient", "--health-addr", "--log-level"} {
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
