package devnet

import (
	"context"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
)

// SendTransfer signs a 1 gwei transfer from dev key keyIndex to `to` with the
// account's next pending nonce and sends it to the node behind eth.
func SendTransfer(ctx context.Context, eth *ethclient.Client, keyIndex int, to common.Address) (*types.Transaction, error) {
	key, from := DevKey(keyIndex)
	chainID, err := eth.ChainID(ctx)
	if err != nil {
		return nil, fmt.Errorf("chain id: %w", err)
	}
	nonce, err := eth.PendingNonceAt(ctx, from)
	if err != nil {
		return nil, fmt.Errorf("nonce of %s: %w", from, err)
	}
	tx, err := types.SignNewTx(key, types.LatestSignerForChainID(chainID), &types.DynamicFeeTx{
		ChainID: chainID, Nonce: nonce, Gas: 21000, To: &to, Value: big.NewInt(1e9),
		GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(50e9),
	})
	if err != nil {
		return nil, err
	}
	return tx, eth.SendTransaction(ctx, tx)
}
