package devnet

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
)

// Sender sends transfers from one dev account. It reads the account's
// pending nonce once and counts from there: asking geth before every send
// races with the pool's asynchronous reset and reuses nonces.
type Sender struct {
	eth     *ethclient.Client
	key     *ecdsa.PrivateKey
	signer  types.Signer
	chainID *big.Int
	nonce   uint64
}

// NewSender prepares transfers from dev key keyIndex through eth.
func NewSender(ctx context.Context, eth *ethclient.Client, keyIndex int) (*Sender, error) {
	key, from := DevKey(keyIndex)
	chainID, err := eth.ChainID(ctx)
	if err != nil {
		return nil, fmt.Errorf("chain id: %w", err)
	}
	nonce, err := eth.PendingNonceAt(ctx, from)
	if err != nil {
		return nil, fmt.Errorf("nonce of %s: %w", from, err)
	}
	return &Sender{eth: eth, key: key, signer: types.LatestSignerForChainID(chainID), chainID: chainID, nonce: nonce}, nil
}

// Transfer signs and sends a 1 gwei transfer to `to`.
func (s *Sender) Transfer(ctx context.Context, to common.Address) (*types.Transaction, error) {
	tx, err := types.SignNewTx(s.key, s.signer, &types.DynamicFeeTx{
		ChainID: s.chainID, Nonce: s.nonce, Gas: 21000, To: &to, Value: big.NewInt(1e9),
		GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(50e9),
	})
	if err != nil {
		return nil, err
	}
	if err := s.eth.SendTransaction(ctx, tx); err != nil {
		return nil, err
	}
	s.nonce++
	return tx, nil
}

// SendTransfer sends one transfer from dev key keyIndex with its next
// pending nonce.
func SendTransfer(ctx context.Context, eth *ethclient.Client, keyIndex int, to common.Address) (*types.Transaction, error) {
	s, err := NewSender(ctx, eth, keyIndex)
	if err != nil {
		return nil, err
	}
	return s.Transfer(ctx, to)
}
