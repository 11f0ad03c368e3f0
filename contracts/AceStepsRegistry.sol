// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title AceStepsRegistry
/// @notice Requests for AI-generated music and the registry of published tracks.
/// A dApp calls `requestGeneration` (paying `requestFee`, if one is set); the AceSteps
/// services generate the track, pin it to IPFS and call `registerTrack` with the keccak256
/// of the file's bytes and its CID. Anyone can then check a file with `verify`.
/// Request ids depend only on what the requester sent (never on block order), so a request
/// re-included in another block after a reorg keeps its id. A chain request can be registered
/// only while it is pending here; requests that reach the services over HTTP are registered
/// through `registerOffchainTrack`, under ids derived in a separate domain, so an id whose
/// request vanished in a reorg can never be registered as an off-chain one.
contract AceStepsRegistry {
    // ------------------------------------------------------------------ interface events

    event GenerationRequested(
        bytes32 indexed requestId,
        address indexed requester,
        string prompt,
        string lyrics,
        uint32 durationSeconds
    );
    event TrackRegistered(bytes32 indexed requestId, bytes32 audioHash, string cid);
    /// @notice How the track was made: keccak256 of its generation manifest's canonical bytes
    /// (RFC 8785 JSON) and the manifest's CID. Emitted with every TrackRegistered.
    event TrackProvenance(bytes32 indexed requestId, bytes32 manifestHash, string manifestCid);

    // ------------------------------------------------------------------ admin events

    event GenerationFailed(bytes32 indexed requestId, string reason, uint256 refund);
    event RefundDeferred(address indexed requester, uint256 amount);
    event PublisherSet(address indexed account, bool allowed);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event RequestFeeSet(uint256 fee);
    event Paused(bool paused);
    event FeesWithdrawn(address indexed to, uint256 amount);

    // ------------------------------------------------------------------ errors

    error NotOwner();
    error NotPublisher();
    error IsPaused();
    error WrongFee(uint256 expected, uint256 sent);
    error BadDuration(uint32 durationSeconds);
    error PromptTooLong(uint256 length);
    error EmptyPrompt();
    error LyricsTooLong(uint256 length);
    error ZeroHash();
    error BadCid();
    error AlreadyRegistered(bytes32 requestId);
    error NotPending(bytes32 requestId);
    error RequestExists(bytes32 requestId);
    error TransferFailed();
    error ZeroAddress();

    // ------------------------------------------------------------------ limits

    uint32 public constant MIN_DURATION_SECONDS = 5;
    uint32 public constant MAX_DURATION_SECONDS = 240;
    uint256 public constant MAX_PROMPT_BYTES = 1000;
    uint256 public constant MAX_LYRICS_BYTES = 4096;
    uint256 public constant MAX_CID_BYTES = 128;
    uint256 public constant MAX_REASON_BYTES = 256;

    // ------------------------------------------------------------------ state

    enum Status {
        None, // never requested on chain (an HTTP id, or unknown)
        Pending, // requested, not yet registered or failed
        Registered,
        Failed
    }

    struct Request {
        address requester;
        Status status; // packed with `requester` in one slot
        uint256 fee; // what was paid, refunded if the request fails (any amount: no truncation)
    }

    struct Track {
        bytes32 audioHash;
        string cid;
        bytes32 manifestHash;
        string manifestCid;
    }

    address public owner;
    uint256 public requestFee;
    bool public paused;
    uint256 public collectedFees; // fees of registered requests, withdrawable by the owner
    mapping(address => uint256) public requestNonce; // calls of `requestGeneration` per requester
    mapping(address => bool) public isPublisher;
    mapping(bytes32 => Request) public requests;
    mapping(address => uint256) public deferredRefunds;
    mapping(bytes32 => Track) private tracks;

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    modifier onlyPublisher() {
        if (!isPublisher[msg.sender]) revert NotPublisher();
        _;
    }

    constructor(address publisher, uint256 fee) {
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
        requestFee = fee;
        emit RequestFeeSet(fee);
        if (publisher != address(0)) {
            isPublisher[publisher] = true;
            emit PublisherSet(publisher, true);
        }
    }

    // ------------------------------------------------------------------ requests

    /// @notice Ask for a track. Pay exactly `requestFee`. The id depends on the requester, their
    /// count of requests here and what they asked for, so a transaction re-included after a
    /// reorg gets the same id (a requester's transactions keep their order), and one sent
    /// instead of a dropped one gets another. `nextRequestId` tells it before sending.
    function requestGeneration(string calldata prompt, string calldata lyrics, uint32 durationSeconds)
        external
        payable
        returns (bytes32 requestId)
    {
        bytes32 salt = _nonceSalt(requestNonce[msg.sender]++, prompt, lyrics, durationSeconds);
        return _request(prompt, lyrics, durationSeconds, salt);
    }

    /// @notice Ask for a track under an id of the caller's choosing: `requestIdOf(caller, salt)`.
    /// For callers whose transactions may be re-ordered (contract wallets, relayers). A salt
    /// can be used once.
    function requestGenerationWithSalt(
        string calldata prompt,
        string calldata lyrics,
        uint32 durationSeconds,
        bytes32 salt
    ) external payable returns (bytes32 requestId) {
        return _request(prompt, lyrics, durationSeconds, salt);
    }

    /// @notice The id a request from `requester` with `salt` gets.
    function requestIdOf(address requester, bytes32 salt) public view returns (bytes32) {
        return keccak256(abi.encode(block.chainid, address(this), requester, salt));
    }

    /// @notice The id `requester`'s next `requestGeneration` with these arguments gets.
    function nextRequestId(address requester, string calldata prompt, string calldata lyrics, uint32 durationSeconds)
        external
        view
        returns (bytes32)
    {
        return requestIdOf(requester, _nonceSalt(requestNonce[requester], prompt, lyrics, durationSeconds));
    }

    /// @notice The id an off-chain (HTTP) request with this `offchainId` is registered under:
    /// a domain of its own, apart from the ids of chain requests.
    function offchainRequestId(bytes32 offchainId) public view returns (bytes32) {
        return keccak256(abi.encode("acesteps.offchain.v1", block.chainid, address(this), offchainId));
    }

    function _nonceSalt(uint256 nonce, string calldata prompt, string calldata lyrics, uint32 durationSeconds)
        private
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(nonce, prompt, lyrics, durationSeconds));
    }

    function _request(string calldata prompt, string calldata lyrics, uint32 durationSeconds, bytes32 salt)
        private
        returns (bytes32 requestId)
    {
        if (paused) revert IsPaused();
        if (msg.value != requestFee) revert WrongFee(requestFee, msg.value);
        if (durationSeconds < MIN_DURATION_SECONDS || durationSeconds > MAX_DURATION_SECONDS) {
            revert BadDuration(durationSeconds);
        }
        if (bytes(prompt).length == 0) revert EmptyPrompt();
        if (bytes(prompt).length > MAX_PROMPT_BYTES) revert PromptTooLong(bytes(prompt).length);
        if (bytes(lyrics).length > MAX_LYRICS_BYTES) revert LyricsTooLong(bytes(lyrics).length);

        requestId = requestIdOf(msg.sender, salt);
        if (requests[requestId].status != Status.None) revert RequestExists(requestId);
        requests[requestId] = Request(msg.sender, Status.Pending, msg.value);
        emit GenerationRequested(requestId, msg.sender, prompt, lyrics, durationSeconds);
    }

    // ------------------------------------------------------------------ publishing

    /// @notice Record the published file of a chain request, which must be pending here:
    /// keccak256 of its bytes, its CID, and its provenance (the generation manifest's hash and
    /// CID). Once.
    function registerTrack(
        bytes32 requestId,
        bytes32 audioHash,
        string calldata cid,
        bytes32 manifestHash,
        string calldata manifestCid
    ) external onlyPublisher {
        _checkTrack(requestId, audioHash, cid, manifestHash, manifestCid);
        Request storage req = requests[requestId];
        if (req.status != Status.Pending) revert NotPending(requestId); // vanished, failed or never requested
        req.status = Status.Registered;
        collectedFees += req.fee;
        _store(requestId, audioHash, cid, manifestHash, manifestCid);
    }

    /// @notice Record the published file of an off-chain (HTTP) request, under
    /// `offchainRequestId(offchainId)`, which it returns. Once.
    function registerOffchainTrack(
        bytes32 offchainId,
        bytes32 audioHash,
        string calldata cid,
        bytes32 manifestHash,
        string calldata manifestCid
    ) external onlyPublisher returns (bytes32 requestId) {
        requestId = offchainRequestId(offchainId);
        _checkTrack(requestId, audioHash, cid, manifestHash, manifestCid);
        _store(requestId, audioHash, cid, manifestHash, manifestCid);
    }

    function _checkTrack(
        bytes32 requestId,
        bytes32 audioHash,
        string calldata cid,
        bytes32 manifestHash,
        string calldata manifestCid
    ) private view {
        if (audioHash == bytes32(0) || manifestHash == bytes32(0)) revert ZeroHash();
        if (bytes(cid).length == 0 || bytes(cid).length > MAX_CID_BYTES) revert BadCid();
        if (bytes(manifestCid).length == 0 || bytes(manifestCid).length > MAX_CID_BYTES) revert BadCid();
        if (tracks[requestId].audioHash != bytes32(0)) revert AlreadyRegistered(requestId);
    }

    function _store(
        bytes32 requestId,
        bytes32 audioHash,
        string calldata cid,
        bytes32 manifestHash,
        string calldata manifestCid
    ) private {
        tracks[requestId] = Track(audioHash, cid, manifestHash, manifestCid);
        emit TrackRegistered(requestId, audioHash, cid);
        emit TrackProvenance(requestId, manifestHash, manifestCid);
    }

    /// @notice Give up on a pending on-chain request and refund its fee.
    /// If the requester cannot receive ether, the refund waits in `deferredRefunds`.
    function markFailed(bytes32 requestId, string calldata reason) external onlyPublisher {
        Request storage req = requests[requestId];
        if (req.status != Status.Pending) revert NotPending(requestId);
        req.status = Status.Failed;
        uint256 refund = req.fee;
        string memory shortReason = bytes(reason).length > MAX_REASON_BYTES ? string(bytes(reason)[:MAX_REASON_BYTES]) : reason;
        emit GenerationFailed(requestId, shortReason, refund);
        if (refund > 0) {
            // A fixed gas stipend: a requester contract cannot block the publisher.
            (bool ok,) = payable(req.requester).call{value: refund, gas: 10_000}("");
            if (!ok) {
                deferredRefunds[req.requester] += refund;
                emit RefundDeferred(req.requester, refund);
            }
        }
    }

    /// @notice Collect refunds that could not be sent when the request failed.
    function claimRefund() external {
        uint256 amount = deferredRefunds[msg.sender];
        deferredRefunds[msg.sender] = 0;
        _send(msg.sender, amount);
    }

    // ------------------------------------------------------------------ reading

    function trackOf(bytes32 requestId) external view returns (bytes32 audioHash, string memory cid) {
        Track storage t = tracks[requestId];
        return (t.audioHash, t.cid);
    }

    /// @notice The generation manifest of a registered track: its hash and CID.
    function provenanceOf(bytes32 requestId) external view returns (bytes32 manifestHash, string memory manifestCid) {
        Track storage t = tracks[requestId];
        return (t.manifestHash, t.manifestCid);
    }

    /// @notice True when `audioHash` is the registered hash of the request's track.
    function verify(bytes32 requestId, bytes32 audioHash) external view returns (bool) {
        return audioHash != bytes32(0) && tracks[requestId].audioHash == audioHash;
    }

    // ------------------------------------------------------------------ administration

    function setPublisher(address account, bool allowed) external onlyOwner {
        if (account == address(0)) revert ZeroAddress();
        isPublisher[account] = allowed;
        emit PublisherSet(account, allowed);
    }

    function setRequestFee(uint256 fee) external onlyOwner {
        requestFee = fee;
        emit RequestFeeSet(fee);
    }

    function setPaused(bool value) external onlyOwner {
        paused = value;
        emit Paused(value);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    /// @notice Withdraw the fees of registered requests (pending fees stay, they may be refunded).
    function withdrawFees(address to) external onlyOwner {
        if (to == address(0)) revert ZeroAddress();
        uint256 amount = collectedFees;
        collectedFees = 0;
        emit FeesWithdrawn(to, amount);
        _send(to, amount);
    }

    function _send(address to, uint256 amount) private {
        if (amount == 0) return;
        (bool ok,) = payable(to).call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
