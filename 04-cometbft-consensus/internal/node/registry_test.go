package node

import (
	"strings"
	"testing"

	"github.com/cometbft/cometbft/types"
	"github.com/ethereum/go-ethereum/common"
)

// The registry comes from the genesis' app_state, the same for every
// validator; a bad one, or one the genesis' key types cannot take, stops
// the validator at start with the reason.
func TestRegistryOf(t *testing.T) {
	reg := "0x0000000000000000000000000000000000001000"
	params := types.DefaultConsensusParams()
	secp := types.DefaultConsensusParams()
	secp.Validator.PubKeyTypes = []string{types.ABCIPubKeyTypeSecp256k1}
	cases := []struct {
		state  string
		params *types.ConsensusParams
		want   common.Address
		err    string
	}{
		{"", params, common.Address{}, ""},
		{`{}`, params, common.Address{}, ""},
		{`{"validator_registry":"` + reg + `"}`, params, common.HexToAddress(reg), ""},
		{`{"validator_registry":"0x12"}`, params, common.Address{}, "not a 20-byte hex address"},
		{`{"validator_registry":`, params, common.Address{}, "app_state"},
		{`{"validator_registry":"` + reg + `"}`, secp, common.Address{}, "pub_key_types"},
	}
	for _, c := range cases {
		got, err := registryOf(&types.GenesisDoc{AppState: []byte(c.state), ConsensusParams: c.params})
		if got != c.want || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("app_state %s: %s, %v; want %s, an error saying %q", c.state, got, err, c.want, c.err)
		}
	}
}
