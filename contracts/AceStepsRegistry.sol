// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CidCodec} from "./CidCodec.sol";

/// @notice What a requester contract implements to be told when its track is registered
/// (`requestGenerationWithCallback`). Called by the registry only, with exactly the gas the
/// request asked for; a callback that reverts or runs out of gas changes nothing here.
interface IAceStepsConsumer {
    function onTrackRegistered(bytes32 requestId, bytes32 audioHash, string calldata cid) external;
}

/// @title AceStepsRegistry
/// @notice Requests for AI-generated music and the registry of published tracks.
/// A dApp calls `requestGeneration` (paying `requestFee`, if one is set); the AceSteps
/// services generate the track, pin it to IPFS and register the keccak256 of the file's bytes,
/// its CID and its generation manifest (`registerTracks`, many in one transaction, or
/// `registerTrack`). Anyone can then check a file with `verify`.
/// Request ids depend only on what the requester sent (never on block order), so a request
/// re-included in another block after a reorg keeps its id. A chain request can be registered
/// only while it is pending here; requests that reach the services over HTTP are registered
/// through `registerOffchainTrack`, under ids derived in a separate domain, so an id whose
/// request vanished in a reorg can never be registered as an off-chain one.
/// A requester takes back the fee of a request that is still pending: `cancelRequest` at any
/// time (the services then drop it), or `reclaim` once `reclaimAfterBlocks` blocks have passed
/// since it was requested without an answer. Both refund the fee as `markFailed` does and emit
/// `RequestCanceled`; a canceled request can never be registered or marked failed.
/// A requester contract may ask to be called back (`IAceStepsConsumer.onTrackRegistered`)
/// when its track is registered: `requestGenerationWithCallback`, paying for the callback's gas.
/// A request may also say how to make the track (`requestGenerationWithOptions`: seed, format,
/// tempo, key, tags, model, style preset, ...), announced by a `RequestOptions` event after its
/// `GenerationRequested`. The owner may set a fee per model (`setModelFee`); a request pays
/// `requestFeeFor` its model, which is `requestFee` for a model without one.
/// Options may ask for up to four variations (`Options.variations`): one transaction then
/// creates, and is paid for, as many requests: the one asked and its variations, each an
/// ordinary request (`VariationRequested`, `parentOf`) with the next seed.
contract AceStepsRegistry {
    /// @notice The version of this contract's interface and rules (semantic versioning).
    string public constant VERSION = "1.3.0";

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
    /// @notice An item of `registerTracks` that was not registered, and why: the selector of
    /// the error `registerTrack` would have reverted with (AlreadyRegistered, NotPending,
    /// ZeroHash, BadCid). The rest of the batch is registered.
    event TrackSkipped(bytes32 indexed requestId, bytes4 reason);
    /// @notice The requester took back a pending request and its fee (`refund`, sent or, for a
    /// requester that refuses ether, deferred with `RefundDeferred`): with `cancelRequest`
    /// (`reclaimed` false) or, once the services had not answered in time, `reclaim` (true).
    event RequestCanceled(bytes32 indexed requestId, address indexed requester, uint256 refund, bool reclaimed);
    /// @notice The callback of a registered request ran: `success` false when it reverted or
    /// ran out of its gas. The registration stands either way.
    event CallbackResult(bytes32 indexed requestId, bool success);
    /// @notice Emitted right after `GenerationRequested`, in the same transaction, by
    /// `requestGenerationWithOptions`: `options` is `abi.encode(options)`.
    event RequestOptions(bytes32 indexed requestId, bytes options);
    /// @notice Emitted after the `RequestOptions` of a variation of `parentId` (a request whose
    /// options asked for `variations` > 1): `requestId` = keccak256(abi.encode(parentId,
    /// uint256(index))), index 1 to variations - 1. A variation is an ordinary request (its own
    /// `GenerationRequested` and `RequestOptions`, fee share, registration, refund, cancel).
    event VariationRequested(bytes32 indexed requestId, bytes32 indexed parentId, uint8 index);

    // ------------------------------------------------------------------ admin events

    event GenerationFailed(bytes32 indexed requestId, string reason, uint256 refund);
    event RefundDeferred(address indexed requester, uint256 amount);
    event PublisherSet(address indexed account, bool allowed);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event RequestFeeSet(uint256 fee);
    event Paused(bool paused);
    event FeesWithdrawn(address indexed to, uint256 amount);
    event CallbackGasPriceSet(uint256 price);
    /// @notice Requests for `model` pay `fee` (`set`), or `requestFee` again (`set` false, `fee` 0).
    event ModelFeeSet(string model, uint256 fee, bool set);

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
    error BadBatch(uint256 length);
    error FeeTooLarge(uint256 fee);
    error NotRequester(bytes32 requestId);
    error TooEarly(uint256 availableAtBlock);
    error BadReclaimDelay();
    error BadCallbackGasLimit(uint32 callbackGasLimit);
    error NotAContract(address requester);
    error CallbackGasShort(bytes32 requestId);
    error CallbackOverBudget();
    error EmptyModel();
    error TooManyVariations(uint8 variations);

    // ------------------------------------------------------------------ limits

    uint32 public constant MIN_DURATION_SECONDS = 5;
    uint32 public constant MAX_DURATION_SECONDS = 240;
    uint256 public constant MAX_PROMPT_BYTES = 1000;
    uint256 public constant MAX_LYRICS_BYTES = 4096;
    uint256 public constant MAX_REASON_BYTES = 256;
    uint256 public constant MAX_BATCH = 128; // 128 off-chain registrations: ~15.7M gas, under 2^24
    /// The most gas a request's callback may ask for.
    uint32 public constant MAX_CALLBACK_GAS_LIMIT = 500_000;
    /// The most callback gas one `registerTracks` gives out: items past it are skipped
    /// (`CallbackOverBudget`) and registered by a later transaction, so that a full batch
    /// with callbacks still uses less than 2^24 gas.
    uint256 public constant MAX_BATCH_CALLBACK_GAS = 1_000_000;
    /// Gas kept for the CALL itself (a cold account: 2,600) when checking that a callback
    /// gets its whole limit.
    uint256 private constant CALLBACK_CALL_RESERVE = 5_000;
    /// The most tracks one request may ask for (`Options.variations`).
    uint8 public constant MAX_VARIATIONS = 4;

    // ------------------------------------------------------------------ state

    enum Status {
        None, // never requested on chain (an HTTP id, or unknown)
        Pending, // requested, not yet registered, failed or canceled
        Registered,
        Failed,
        Canceled // by its requester: `cancelRequest` or `reclaim`
    }

    /// Two slots: the first packs requester, status, codec and fee; `requestedAt` and
    /// `callbackGasLimit` share the second (a chain request's only, written once, in the
    /// same store whether a callback was asked for or not). An off-chain request gets one
    /// when its track is registered (requester 0, requestedAt 0).
    struct Request {
        address requester;
        Status status;
        uint8 cidCodec; // the track's CID: CidCodec.RAW or CidCodec.DAG_PB, set on registration
        uint80 fee; // what was paid (with a callback's gas), refunded if the request fails
        uint64 requestedAt; // the block of the request, where the delay of `reclaim` starts
        uint32 callbackGasLimit; // 0: no callback; else the gas `onTrackRegistered` gets
    }

    /// Three slots. The CID is CIDv1, sha2-256: its digest here, its codec in the request;
    /// the manifest's CID is CIDv1 raw keccak-256 of its bytes, so `manifestHash` is its digest.
    struct Track {
        bytes32 audioHash;
        bytes32 cidDigest;
        bytes32 manifestHash;
    }

    /// What a request asks beyond prompt, lyrics and duration (`requestGenerationWithOptions`).
    /// A zero value means "not asked" (the service's default). The contract checks none of them
    /// but `model`, whose fee it charges (a preset changes no fee), and `variations`, the
    /// requests it makes; the services validate the rest and fail (refunding) a request they
    /// refuse.
    struct Options {
        bool hasSeed; // false: the service derives the seed from the request id
        uint32 seed;
        string format; // "mp3", "wav" or "flac"; "" = mp3
        uint16 bpm; // 30..300; 0 = not asked
        string key; // "C major", "F# minor", ...; "" = not asked
        uint8 timeSignature; // beats per bar: 2, 3, 4 or 6; 0 = not asked
        string vocalLanguage; // "en", "fr", ...; "" = not asked
        bool instrumental; // no vocals (the lyrics must then be empty)
        string[] tags; // genre, mood, instruments
        string model; // a served model's name; "" = the operator's default
        string preset; // a style preset's name (since 1.3.0); "" = none
        uint8 variations; // tracks to make, 2..MAX_VARIATIONS (since 1.3.0); 0 or 1 = one
    }

    /// An item of `registerTracks`: a chain request (`id` = its request id) or an off-chain one
    /// (`offchain`, `id` = its off-chain id, registered under `offchainRequestId(id)`).
    struct TrackInput {
        bytes32 id;
        bool offchain;
        bytes32 audioHash;
        string cid;
        bytes32 manifestHash;
    }

    /// @notice Blocks after its request's block from which a requester may `reclaim` a request
    /// still pending. Set once, at deployment; never 0, so a requester cannot take the fee back
    /// in the very block of the request, racing the publisher that answers it.
    uint256 public immutable reclaimAfterBlocks;

    address public owner;
    uint256 public requestFee;
    /// @notice Wei per gas of a callback's limit that a callback request pays on top of
    /// `requestFee` (set by the owner; 0 until then).
    uint256 public callbackGasPrice;
    bool public paused;
    uint256 public collectedFees; // fees of registered requests, withdrawable by the owner
    /// @notice Requests per requester that took their id from this count (`requestGeneration`,
    /// `requestGenerationWithCallback`, `requestGenerationWithOptions`).
    mapping(address => uint256) public requestNonce;
    mapping(address => bool) public isPublisher;
    mapping(bytes32 => Request) public requests;
    mapping(address => uint256) public deferredRefunds;
    mapping(bytes32 => Track) private tracks;
    mapping(bytes32 => bytes32) private firstRequestOfAudio; // audioHash -> its first registration
    mapping(bytes32 => uint256) private modelFees; // keccak256(model) -> its fee + 1 (0: not set)
    mapping(bytes32 => bytes32) private parents; // a variation's id -> its parent's id

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    modifier onlyPublisher() {
        if (!isPublisher[msg.sender]) revert NotPublisher();
        _;
    }

    /// @param reclaimDelay `reclaimAfterBlocks`: 1 to 2^64 - 1 (else BadReclaimDelay).
    constructor(address publisher, uint256 fee, uint256 reclaimDelay) {
        if (reclaimDelay == 0 || reclaimDelay > type(uint64).max) revert BadReclaimDelay();
        reclaimAfterBlocks = reclaimDelay;
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
        _setRequestFee(fee);
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
        return _request(prompt, lyrics, durationSeconds, salt, requestFee, 1, 0);
    }

    /// @notice `requestGeneration` for a contract that wants to be called back when its track
    /// is registered: `IAceStepsConsumer(msg.sender).onTrackRegistered(requestId, audioHash,
    /// cid)` with exactly `callbackGasLimit` gas (1 to MAX_CALLBACK_GAS_LIMIT, else
    /// BadCallbackGasLimit), after the registration is complete. Pay exactly
    /// `requestFeeWithCallback(callbackGasLimit)`: the limit is paid for whatever the callback
    /// uses, and refunded with the fee if the request fails or is canceled. The caller must be
    /// a contract (NotAContract), not one still in its constructor. The request is a
    /// `requestGeneration` in every other way: the same `GenerationRequested` event, the same
    /// id (`nextRequestId`).
    function requestGenerationWithCallback(
        string calldata prompt,
        string calldata lyrics,
        uint32 durationSeconds,
        uint32 callbackGasLimit
    ) external payable returns (bytes32 requestId) {
        if (callbackGasLimit == 0 || callbackGasLimit > MAX_CALLBACK_GAS_LIMIT) {
            revert BadCallbackGasLimit(callbackGasLimit);
        }
        if (msg.sender.code.length == 0) revert NotAContract(msg.sender);
        bytes32 salt = _nonceSalt(requestNonce[msg.sender]++, prompt, lyrics, durationSeconds);
        uint256 fee = requestFeeWithCallback(callbackGasLimit);
        return _request(prompt, lyrics, durationSeconds, salt, fee, 1, callbackGasLimit);
    }

    /// @notice What `requestGenerationWithCallback` costs with this `callbackGasLimit`.
    function requestFeeWithCallback(uint32 callbackGasLimit) public view returns (uint256) {
        return requestFee + uint256(callbackGasLimit) * callbackGasPrice;
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
        return _request(prompt, lyrics, durationSeconds, salt, requestFee, 1, 0);
    }

    /// @notice `requestGeneration` with `options` for the services (see `Options`: a zero value
    /// is "not asked"). Pay exactly `requestFeeFor(options.model)` per track. Emits
    /// `GenerationRequested` and then `RequestOptions` with `abi.encode(options)`. The id counts
    /// in the same sequence as `requestGeneration`'s and depends on the options too, so one
    /// sent instead of a dropped one with other options gets another: `nextRequestIdWithOptions`.
    /// With `options.variations` n of 2 to MAX_VARIATIONS (more: TooManyVariations), pay n
    /// times the fee: the request (its id returned) is followed by its variations 1 to n - 1,
    /// requests of the same requester, prompt, lyrics and duration, each with one share of the
    /// fee, under id keccak256(abi.encode(requestId, uint256(index))), with the options
    /// `variations` 0, `hasSeed` and `seed` = the request's seed + index (wrapping; a request
    /// without a seed: the first four bytes of keccak256(requestId), big-endian), announced by
    /// `GenerationRequested`, `RequestOptions` and `VariationRequested`.
    function requestGenerationWithOptions(
        string calldata prompt,
        string calldata lyrics,
        uint32 durationSeconds,
        Options calldata options
    ) external payable returns (bytes32 requestId) {
        uint8 count = options.variations;
        if (count > MAX_VARIATIONS) revert TooManyVariations(count);
        if (count == 0) count = 1;
        bytes memory encoded = abi.encode(options);
        bytes32 salt =
            _optionsSalt(requestNonce[msg.sender]++, prompt, lyrics, durationSeconds, keccak256(encoded));
        requestId = _request(prompt, lyrics, durationSeconds, salt, requestFeeFor(options.model), count, 0);
        emit RequestOptions(requestId, encoded);
        if (count > 1) _variations(requestId, count, prompt, lyrics, durationSeconds, options);
    }

    /// Records variations 1 to `count` - 1 of pending request `parentId`, with its requester,
    /// fee share and block. A variation's id cannot have been used: every other id this
    /// contract stores is keccak256 of a longer encoding (`requestIdOf`, `offchainRequestId`).
    function _variations(
        bytes32 parentId,
        uint256 count,
        string calldata prompt,
        string calldata lyrics,
        uint32 durationSeconds,
        Options calldata options
    ) private {
        Request memory share = requests[parentId];
        Options memory child = options;
        child.variations = 0;
        child.hasSeed = true;
        uint32 seed = options.hasSeed ? options.seed : uint32(bytes4(keccak256(abi.encodePacked(parentId))));
        for (uint256 index = 1; index < count; ++index) {
            bytes32 childId = keccak256(abi.encode(parentId, index));
            requests[childId] = share;
            parents[childId] = parentId;
            unchecked {
                child.seed = seed + uint32(index); // modulo 2^32
            }
            emit GenerationRequested(childId, msg.sender, prompt, lyrics, durationSeconds);
            emit RequestOptions(childId, abi.encode(child));
            emit VariationRequested(childId, parentId, uint8(index));
        }
    }

    /// @notice The request that `requestId` is a variation of, and its index among the
    /// parent's (1 to MAX_VARIATIONS - 1); zero for a request that is no variation.
    function parentOf(bytes32 requestId) external view returns (bytes32 parentId, uint8 index) {
        parentId = parents[requestId];
        if (parentId == bytes32(0)) return (parentId, 0);
        for (index = 1; index < MAX_VARIATIONS; ++index) {
            if (keccak256(abi.encode(parentId, uint256(index))) == requestId) break;
        }
    }

    /// @notice What a request for `model` costs: the fee the owner set for it, else (and for "")
    /// `requestFee`.
    function requestFeeFor(string calldata model) public view returns (uint256) {
        if (bytes(model).length != 0) {
            uint256 feePlusOne = modelFees[keccak256(bytes(model))];
            if (feePlusOne != 0) return feePlusOne - 1;
        }
        return requestFee;
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

    /// @notice The id `requester`'s next `requestGenerationWithOptions` with these arguments gets.
    function nextRequestIdWithOptions(
        address requester,
        string calldata prompt,
        string calldata lyrics,
        uint32 durationSeconds,
        Options calldata options
    ) external view returns (bytes32) {
        bytes32 optionsHash = keccak256(abi.encode(options));
        return requestIdOf(
            requester, _optionsSalt(requestNonce[requester], prompt, lyrics, durationSeconds, optionsHash)
        );
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

    function _optionsSalt(
        uint256 nonce,
        string calldata prompt,
        string calldata lyrics,
        uint32 durationSeconds,
        bytes32 optionsHash
    ) private pure returns (bytes32) {
        return keccak256(abi.encode(nonce, prompt, lyrics, durationSeconds, optionsHash));
    }

    /// Records a request paying `fee` (what it stores and refunds), after the checks every
    /// request shares; the transaction pays for `count` such requests (it and its variations).
    function _request(
        string calldata prompt,
        string calldata lyrics,
        uint32 durationSeconds,
        bytes32 salt,
        uint256 fee,
        uint256 count,
        uint32 callbackGasLimit
    ) private returns (bytes32 requestId) {
        if (paused) revert IsPaused();
        if (fee > type(uint80).max) revert FeeTooLarge(fee); // what the request stores
        if (msg.value != fee * count) revert WrongFee(fee * count, msg.value);
        if (durationSeconds < MIN_DURATION_SECONDS || durationSeconds > MAX_DURATION_SECONDS) {
            revert BadDuration(durationSeconds);
        }
        if (bytes(prompt).length == 0) revert EmptyPrompt();
        if (bytes(prompt).length > MAX_PROMPT_BYTES) revert PromptTooLong(bytes(prompt).length);
        if (bytes(lyrics).length > MAX_LYRICS_BYTES) revert LyricsTooLong(bytes(lyrics).length);

        requestId = requestIdOf(msg.sender, salt);
        if (requests[requestId].status != Status.None) revert RequestExists(requestId);
        // fits: fee <= 2^80 - 1 (checked), and block numbers stay far below 2^64
        requests[requestId] =
            Request(msg.sender, Status.Pending, 0, uint80(fee), uint64(block.number), callbackGasLimit);
        emit GenerationRequested(requestId, msg.sender, prompt, lyrics, durationSeconds);
    }

    // ------------------------------------------------------------------ publishing

    /// @notice Record the published files of many requests at once, emitting for each the events
    /// `registerTrack` emits. An item that cannot be registered (already registered, not
    /// pending, a zero hash, a CID of another form) is skipped with `TrackSkipped`; the others
    /// are registered. Reverts only for the whole batch: not a publisher, empty or over
    /// MAX_BATCH items. Returns how many were registered.
    /// Callbacks run once every item is registered, in the order of the items; a request whose
    /// callback's gas would take the batch past MAX_BATCH_CALLBACK_GAS is skipped with
    /// `CallbackOverBudget` (send it again). The transaction must carry the gas of every
    /// callback limit (else it reverts with CallbackGasShort): eth_estimateGas finds it.
    function registerTracks(TrackInput[] calldata items) external onlyPublisher returns (uint256 registered) {
        if (items.length == 0 || items.length > MAX_BATCH) revert BadBatch(items.length);
        uint256 fees;
        uint256 callbackGas = MAX_BATCH_CALLBACK_GAS; // what is left to give out
        uint256[] memory withCallback = new uint256[](items.length);
        uint256 callbacks;
        for (uint256 i; i < items.length; ++i) {
            TrackInput calldata item = items[i];
            bytes32 requestId = item.offchain ? offchainRequestId(item.id) : item.id;
            (bytes4 refused, uint256 fee, uint256 gasLimit) =
                _register(requestId, !item.offchain, item.audioHash, item.cid, item.manifestHash, callbackGas);
            if (refused != bytes4(0)) {
                emit TrackSkipped(requestId, refused);
            } else {
                fees += fee;
                ++registered;
                if (gasLimit != 0) {
                    callbackGas -= gasLimit;
                    withCallback[callbacks++] = i;
                }
            }
        }
        collectedFees += fees;
        // Interactions last: every registration of the batch is complete.
        for (uint256 j; j < callbacks; ++j) {
            TrackInput calldata item = items[withCallback[j]];
            _callBack(item.id, item.audioHash, item.cid);
        }
    }

    /// @notice Record the published file of a chain request, which must be pending here:
    /// keccak256 of its bytes, its CID (CIDv1 base32, sha2-256), and its provenance: the
    /// generation manifest's keccak256 and CID (CIDv1 raw keccak-256 of the same bytes). Once.
    function registerTrack(
        bytes32 requestId,
        bytes32 audioHash,
        string calldata cid,
        bytes32 manifestHash,
        string calldata manifestCid
    ) external onlyPublisher {
        _checkManifestCid(manifestHash, manifestCid);
        (bytes4 refused, uint256 fee, uint256 gasLimit) =
            _register(requestId, true, audioHash, cid, manifestHash, MAX_CALLBACK_GAS_LIMIT);
        _revertIf(refused, requestId);
        collectedFees += fee;
        if (gasLimit != 0) _callBack(requestId, audioHash, cid); // after every state change
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
        _checkManifestCid(manifestHash, manifestCid);
        (bytes4 refused,,) = _register(requestId, false, audioHash, cid, manifestHash, 0);
        _revertIf(refused, requestId);
    }

    /// Registers one track, or says which error refuses it (and changes nothing). Returns the
    /// fee the registration collects and the gas of the callback to make (0: none), which may
    /// be at most `callbackGasLeft` (else CallbackOverBudget).
    function _register(
        bytes32 requestId,
        bool onChain,
        bytes32 audioHash,
        string calldata cid,
        bytes32 manifestHash,
        uint256 callbackGasLeft
    ) private returns (bytes4 refused, uint256 fee, uint256 callbackGasLimit) {
        if (audioHash == bytes32(0) || manifestHash == bytes32(0)) return (ZeroHash.selector, 0, 0);
        (uint8 codec, bytes32 digest) = _fileCid(cid);
        if (codec == 0) return (BadCid.selector, 0, 0);
        Request storage req = requests[requestId];
        if (req.status == Status.Registered) return (AlreadyRegistered.selector, 0, 0);
        if (onChain) {
            // vanished, failed, canceled or never requested
            if (req.status != Status.Pending) return (NotPending.selector, 0, 0);
            callbackGasLimit = req.callbackGasLimit;
            if (callbackGasLimit > callbackGasLeft) return (CallbackOverBudget.selector, 0, 0);
            fee = req.fee;
        }
        // An off-chain id's record is new (its domain never meets chain ids): requester, fee
        // and requestedAt stay 0.
        req.status = Status.Registered;
        req.cidCodec = codec;
        tracks[requestId] = Track(audioHash, digest, manifestHash);
        if (firstRequestOfAudio[audioHash] == bytes32(0)) firstRequestOfAudio[audioHash] = requestId;
        emit TrackRegistered(requestId, audioHash, cid);
        emit TrackProvenance(requestId, manifestHash, _manifestCid(manifestHash));
    }

    /// Calls the requester of registered `requestId` back with exactly its callback's gas limit.
    /// Never reverts for the callee: its revert or out-of-gas is `CallbackResult(false)`, and
    /// its return data is never copied (a huge one costs the callee, not this call). Reverts
    /// with CallbackGasShort when the transaction has too little gas left to give the callee
    /// its whole limit (EIP-150 passes on at most 63/64 of what is left): a publisher's
    /// too-low gas must not starve a callback that was paid for.
    function _callBack(bytes32 requestId, bytes32 audioHash, string calldata cid) private {
        Request storage req = requests[requestId];
        address consumer = req.requester;
        uint256 gasLimit = req.callbackGasLimit;
        bytes memory data = abi.encodeCall(IAceStepsConsumer.onTrackRegistered, (requestId, audioHash, cid));
        if (gasleft() < gasLimit + gasLimit / 63 + CALLBACK_CALL_RESERVE) revert CallbackGasShort(requestId);
        bool success;
        assembly ("memory-safe") {
            success := call(gasLimit, consumer, 0, add(data, 0x20), mload(data), 0, 0)
        }
        emit CallbackResult(requestId, success);
    }

    /// The codec (0 when refused) and digest of a file's CID: CIDv1, sha2-256, raw or dag-pb.
    function _fileCid(string calldata cid) private pure returns (uint8 codec, bytes32 digest) {
        (bool ok, uint32 prefix, bytes32 d) = CidCodec.decode(cid);
        if (!ok) return (0, 0);
        if (prefix == CidCodec.prefixOf(CidCodec.DAG_PB, CidCodec.SHA2_256)) return (CidCodec.DAG_PB, d);
        if (prefix == CidCodec.prefixOf(CidCodec.RAW, CidCodec.SHA2_256)) return (CidCodec.RAW, d);
        return (0, 0);
    }

    function _checkManifestCid(bytes32 manifestHash, string calldata manifestCid) private pure {
        if (keccak256(bytes(manifestCid)) != keccak256(bytes(_manifestCid(manifestHash)))) revert BadCid();
    }

    function _manifestCid(bytes32 manifestHash) private pure returns (string memory) {
        return CidCodec.encode(CidCodec.prefixOf(CidCodec.RAW, CidCodec.KECCAK_256), manifestHash);
    }

    function _revertIf(bytes4 refused, bytes32 requestId) private pure {
        if (refused == bytes4(0)) return;
        if (refused == ZeroHash.selector) revert ZeroHash();
        if (refused == BadCid.selector) revert BadCid();
        if (refused == AlreadyRegistered.selector) revert AlreadyRegistered(requestId);
        if (refused == CallbackOverBudget.selector) revert CallbackOverBudget();
        revert NotPending(requestId);
    }

    /// @notice Give up on a pending on-chain request and refund its fee.
    /// If the requester cannot receive ether, the refund waits in `deferredRefunds`.
    function markFailed(bytes32 requestId, string calldata reason) external onlyPublisher {
        Request storage req = requests[requestId];
        if (req.status != Status.Pending) revert NotPending(requestId);
        req.status = Status.Failed;
        uint256 refund = req.fee;
        emit GenerationFailed(requestId, _shortReason(reason), refund);
        _refund(req.requester, refund);
    }

    /// `reason` cut to at most MAX_REASON_BYTES, never inside a UTF-8 character: the cut backs
    /// off over continuation bytes (0b10xxxxxx), at most three of them.
    function _shortReason(string calldata reason) private pure returns (string memory) {
        bytes calldata text = bytes(reason);
        if (text.length <= MAX_REASON_BYTES) return reason;
        uint256 end = MAX_REASON_BYTES;
        for (uint256 i; i < 3 && uint8(text[end]) & 0xC0 == 0x80; ++i) --end;
        return string(text[:end]);
    }

    /// @notice Withdraw a pending request of the caller's and take its fee back; the services
    /// drop it. Refunded as `markFailed` refunds: a requester that cannot receive ether finds
    /// the fee in `deferredRefunds`. Works while paused.
    function cancelRequest(bytes32 requestId) external {
        _cancel(requestId, _ownPending(requestId), false);
    }

    /// @notice Take back the fee of a pending request of the caller's that the services have not
    /// answered within `reclaimAfterBlocks` blocks: from block `reclaimableAt(requestId)` on
    /// (else TooEarly with that block). The request is canceled and refunded as by
    /// `cancelRequest`.
    function reclaim(bytes32 requestId) external {
        Request storage req = _ownPending(requestId);
        uint256 availableAt = uint256(req.requestedAt) + reclaimAfterBlocks;
        if (block.number < availableAt) revert TooEarly(availableAt);
        _cancel(requestId, req, true);
    }

    /// @notice The first block in which `reclaim` of `requestId` succeeds; 0 when the request
    /// is not pending (registered, failed, canceled or never requested).
    function reclaimableAt(bytes32 requestId) external view returns (uint256) {
        Request storage req = requests[requestId];
        if (req.status != Status.Pending) return 0;
        return uint256(req.requestedAt) + reclaimAfterBlocks;
    }

    /// The caller's request `requestId`, which must be pending.
    function _ownPending(bytes32 requestId) private view returns (Request storage req) {
        req = requests[requestId];
        if (req.requester != msg.sender) revert NotRequester(requestId);
        if (req.status != Status.Pending) revert NotPending(requestId);
    }

    function _cancel(bytes32 requestId, Request storage req, bool reclaimed) private {
        req.status = Status.Canceled;
        uint256 refund = req.fee;
        emit RequestCanceled(requestId, msg.sender, refund, reclaimed);
        _refund(msg.sender, refund);
    }

    /// Sends a request's fee back to its requester. A fixed gas stipend: a requester contract
    /// cannot block the caller; when the send fails, the refund waits in `deferredRefunds`.
    function _refund(address requester, uint256 refund) private {
        if (refund == 0) return;
        (bool ok,) = payable(requester).call{value: refund, gas: 10_000}("");
        if (!ok) {
            deferredRefunds[requester] += refund;
            emit RefundDeferred(requester, refund);
        }
    }

    /// @notice Collect refunds that could not be sent when the request failed or was canceled.
    function claimRefund() external {
        uint256 amount = deferredRefunds[msg.sender];
        deferredRefunds[msg.sender] = 0;
        _send(msg.sender, amount);
    }

    // ------------------------------------------------------------------ reading

    function trackOf(bytes32 requestId) external view returns (bytes32 audioHash, string memory cid) {
        Track storage t = tracks[requestId];
        if (t.audioHash == bytes32(0)) return (bytes32(0), "");
        return (t.audioHash, CidCodec.encode(CidCodec.prefixOf(requests[requestId].cidCodec, CidCodec.SHA2_256), t.cidDigest));
    }

    /// @notice The generation manifest of a registered track: its hash and CID.
    function provenanceOf(bytes32 requestId) external view returns (bytes32 manifestHash, string memory manifestCid) {
        Track storage t = tracks[requestId];
        if (t.manifestHash == bytes32(0)) return (bytes32(0), "");
        return (t.manifestHash, _manifestCid(t.manifestHash));
    }

    /// @notice The request whose track was the first registered with these bytes (keccak256
    /// of the file), or zero. Identical requests with the same seed make identical bytes, so
    /// several requests can share a hash: the first registration answers, and `verify` tells
    /// for any other request id.
    function requestOfAudio(bytes32 audioHash) external view returns (bytes32 requestId) {
        return firstRequestOfAudio[audioHash];
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
        _setRequestFee(fee);
    }

    function _setRequestFee(uint256 fee) private {
        if (fee > type(uint80).max) revert FeeTooLarge(fee);
        requestFee = fee;
        emit RequestFeeSet(fee);
    }

    /// @notice The fee of requests for `model` (`requestFeeFor`), instead of `requestFee`: at most
    /// 2^80 - 1 wei (FeeTooLarge); `model` not empty (EmptyModel). Requests made before keep what
    /// they paid.
    function setModelFee(string calldata model, uint256 fee) external onlyOwner {
        if (bytes(model).length == 0) revert EmptyModel();
        if (fee > type(uint80).max) revert FeeTooLarge(fee);
        modelFees[keccak256(bytes(model))] = fee + 1;
        emit ModelFeeSet(model, fee, true);
    }

    /// @notice Requests for `model` pay `requestFee` again.
    function clearModelFee(string calldata model) external onlyOwner {
        if (bytes(model).length == 0) revert EmptyModel();
        delete modelFees[keccak256(bytes(model))];
        emit ModelFeeSet(model, 0, false);
    }

    /// @notice Wei per gas of a callback's limit (`requestFeeWithCallback`); requests made
    /// before keep what they paid.
    function setCallbackGasPrice(uint256 price) external onlyOwner {
        if (price > type(uint80).max) revert FeeTooLarge(price);
        callbackGasPrice = price;
        emit CallbackGasPriceSet(price);
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
