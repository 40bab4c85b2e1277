// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title ValidatorRegistry: the stage 4 chain's requests to change its
/// CometBFT validator set.
///
/// The owner sets the voting power of a CometBFT ed25519 public key: a key
/// with no power yet is added, 0 removes it. Every change emits
/// PowerChanged. At each height the validators' ABCI app reads those events
/// from the receipts of the block CometBFT just decided and hands them to
/// CometBFT as validator updates, which take effect two heights later.
///
/// This contract checks who asks and what a single change may be. Whether a
/// change fits the set CometBFT holds (a key that is not a validator cannot
/// be removed, the last validator cannot be, at most a third of the power
/// may change at one height, the total stays under CometBFT's limit) is
/// checked by the app, against that set: the genesis validators are in
/// CometBFT's genesis, not here. A change the app refuses is logged and
/// counted by every validator alike, and `validator list` shows it as a
/// difference between this contract and CometBFT.
///
/// A production chain would put staking behind `owner`: a staking contract
/// (or a governance module) as the owner, turning bonded stake into power.
contract ValidatorRegistry {
    /// CometBFT's MaxTotalVotingPower (MaxInt64 / 8): no single validator
    /// may exceed what the whole set may hold.
    uint64 public constant MAX_POWER = 1152921504606846975;

    /// The only address that may change the set (slot 0, set in genesis).
    address public owner;

    /// The power last set for each key (0: never set, or removed).
    mapping(bytes32 => uint64) public powerOf;

    /// Every key ever set, in the order first set, and whether it is there.
    bytes32[] private _keys;
    mapping(bytes32 => bool) private _listed;

    event PowerChanged(bytes32 indexed pubKey, uint64 power);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error NotOwner(address caller);
    error ZeroKey();
    error PowerTooHigh(uint64 power);
    error LengthMismatch(uint256 keys, uint256 powers);
    error ZeroOwner();

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    /// Sets pubKey's power: adds it when it has none, removes it with 0.
    function setPower(bytes32 pubKey, uint64 power) external onlyOwner {
        _setPower(pubKey, power);
    }

    /// Sets several powers in one transaction, so at one height.
    function setPowers(bytes32[] calldata pubKeys, uint64[] calldata powers) external onlyOwner {
        if (pubKeys.length != powers.length) revert LengthMismatch(pubKeys.length, powers.length);
        for (uint256 i = 0; i < pubKeys.length; i++) {
            _setPower(pubKeys[i], powers[i]);
        }
    }

    /// Hands the registry to another owner (a multisig, a staking contract).
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroOwner();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    /// Every key ever set, with its power now (0: removed).
    function keys() external view returns (bytes32[] memory pubKeys, uint64[] memory powers) {
        pubKeys = _keys;
        powers = new uint64[](pubKeys.length);
        for (uint256 i = 0; i < pubKeys.length; i++) {
            powers[i] = powerOf[pubKeys[i]];
        }
    }

    function _setPower(bytes32 pubKey, uint64 power) private {
        if (pubKey == bytes32(0)) revert ZeroKey();
        if (power > MAX_POWER) revert PowerTooHigh(power);
        if (!_listed[pubKey]) {
            _listed[pubKey] = true;
            _keys.push(pubKey);
        }
        powerOf[pubKey] = power;
        emit PowerChanged(pubKey, power);
    }
}
