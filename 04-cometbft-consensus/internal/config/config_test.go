package config

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	c := Default()
	c.CmtHome = ""
	c.EngineURL = "localhost:8551"
	c.BuildWait = -1
	c.StallBlocks = -1
	c.FeeRecipient = "0x12"
	c.HealthAddr = "8080"
	c.LogLevel = "loud"
	c.LogFormat = "xml"
	err := c.Validate()
	for _, flag := range []string{"--cmt-home", "--eth-client-url", "--build-wait", "--stall-blocks", "--fee-recipient", "--health-addr", "--log-level", "--log-format"} {
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("error does not name %s: %v", flag, err)
		}
	}
}

func TestEnvironmentFallbackAndPrecedence(t *testing.T) {
	c := Default()
	cmd := &cobra.Command{Use: "x"}
	c.Bind(cmd)
	if err := cmd.ParseFlags([]string{"--cmt-home", "/from/flag"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CMT_HOME": "/from/env", "BUILD_WAIT": "20ms", "HEALTH_ADDR": ":9000", "LOG_LEVEL": "debug", "ALLOW_CLOCK_DRIFT": "true", "STALL_BLOCKS": "3"}
	if err := ApplyEnv(cmd, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if c.CmtHome != "/from/flag" {
		t.Errorf("flag lost to the environment: cmt-home %s", c.CmtHome)
	}
	if c.BuildWait.String() != "20ms" || c.HealthAddr != ":9000" || c.LogLevel != "debug" || !c.AllowClockDrift || c.StallBlocks != 3 {
		t.Errorf("environment ignored: %+v", c)
	}
	env["BUILD_WAIT"] = "soon"
	c2 := Default()
	cmd2 := &cobra.Command{Use: "x"}
	c2.Bind(cmd2)
	err := ApplyEnv(cmd2, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err == nil || !strings.Contains(err.Error(), `BUILD_WAIT="soon"`) {
		t.Fatalf("bad env value not named: %v", err)
	}
}

// The home comes from CMT_HOME, else from CometBFT's own CMTHOME; the flag
// beats both.
func TestCmtHomeFromEitherVariable(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"CMTHOME": "/cometbft"}, "/cometbft"},
		{nil, map[string]string{"CMTHOME": "/cometbft", "CMT_HOME": "/ours"}, "/ours"},
		{[]string{"--cmt-home", "/flag"}, map[string]string{"CMTHOME": "/cometbft", "CMT_HOME": "/ours"}, "/flag"},
		{nil, nil, Default().CmtHome},
	} {
		c := Default()
		cmd := &cobra.Command{Use: "x"}
		c.Bind(cmd)
		if err := cmd.ParseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := ApplyEnv(cmd, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }); err != nil {
			t.Fatal(err)
		}
		if c.CmtHome != tc.want {
			t.Errorf("%v %v: home %s, want %s", tc.args, tc.env, c.CmtHome, tc.want)
		}
	}
	c := Default()
	cmd := &cobra.Command{Use: "x"}
	c.Bind(cmd)
	if usage := cmd.Flags().Lookup("cmt-home").Usage; !strings.Contains(usage, "CMTHOME") {
		t.Errorf("--cmt-home's help does not name CMTHOME: %s", usage)
	}
}
