// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// The part of AceStepsRegistry this example uses (the whole ABI ships in the deployment
/// artifact, `GET /api/contract`).
interface IAceStepsRegistry {
    function requestGenerationWithCallback(
        string calldata prompt,
        string calldata lyrics,
        uint32 durationSeconds,
        uint32 callbackGasLimit
    ) external payable returns (bytes32 requestId);
    function requestFeeWithCallback(uint32 callbackGasLimit) external view returns (uint256);
    function cancelRequest(bytes32 requestId) external;
    function verify(bytes32 requestId, bytes32 audioHash) external view returns (bool);
}

/// What the registry calls when a track asked for with a callback is registered.
interface IAceStepsConsumer {
    function onTrackRegistered(bytes32 requestId, bytes32 audioHash, string calldata cid) external;
}

/// @title ExampleConsumer
/// @notice A dApp contract that asks AceSteps for a song and keeps its audio hash and CID when
/// the registry calls it back. Anyone holding the file can then check it: keccak256 of its
/// bytes equals `songs(requestId).audioHash` (or ask the registry's `verify`).
contract ExampleConsumer is IAceStepsConsumer {
    /// Enough for what `onTrackRegistered` does: two storage writes (the hash, a 59-byte CID
    /// in three slots) and an event, about 100,000 gas. The request pays for all of it.
    uint32 public constant CALLBACK_GAS_LIMIT = 150_000;

    struct Song {
        bytes32 audioHash;
        string cid;
    }

    IAceStepsRegistry public immutable registry;
    address public immutable owner;
    mapping(bytes32 => Song) public songs;
    bytes32 public lastRequestId;

    event SongRequested(bytes32 indexed requestId, string prompt);
    event SongReady(bytes32 indexed requestId, bytes32 audioHash, string cid);

    error NotRegistry(address caller);
    error NotOwner(address caller);

    constructor(IAceStepsRegistry registry_) {
        registry = registry_;
        owner = msg.sender;
    }

    /// @notice What `requestSong` costs now (the registry's fee and the callback's gas).
    function songFee() external view returns (uint256) {
        return registry.requestFeeWithCallback(CALLBACK_GAS_LIMIT);
    }

    /// @notice Ask for a song; send exactly `songFee()`.
    function requestSong(string calldata prompt, uint32 durationSeconds) external payable returns (bytes32 requestId) {
        requestId = registry.requestGenerationWithCallback{value: msg.value}(
            prompt, "", durationSeconds, CALLBACK_GAS_LIMIT
        );
        lastRequestId = requestId;
        emit SongRequested(requestId, prompt);
    }

    /// @notice Called by the registry, and only by it, once the track is registered.
    function onTrackRegistered(bytes32 requestId, bytes32 audioHash, string calldata cid) external {
        if (msg.sender != address(registry)) revert NotRegistry(msg.sender);
        songs[requestId] = Song(audioHash, cid);
        emit SongReady(requestId, audioHash, cid);
    }

    /// @notice The audio hash of a song called back (zero until then).
    function audioHashOf(bytes32 requestId) external view returns (bytes32) {
        return songs[requestId].audioHash;
    }

    /// @notice Withdraw a pending request: the registry refunds the fee here.
    function cancel(bytes32 requestId) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        registry.cancelRequest(requestId);
    }

    /// @notice Send the refunds of failed or canceled requests on.
    function withdraw(address payable to) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        (bool ok,) = to.call{value: address(this).balance}("");
        require(ok, "transfer failed");
    }

    /// Refunds of failed or canceled requests (the registry sends them with a 10,000 gas stipend).
    receive() external payable {}
}
