// The registry's reads, straight from an Ethereum JSON-RPC endpoint with viem: the verdict
// depends on nothing else (not on the server that served this page).
import {
  BaseError,
  ContractFunctionRevertedError,
  ContractFunctionZeroDataError,
  HttpRequestError,
  TimeoutError,
  createPublicClient,
  getAddress,
  http,
  parseAbi,
} from "viem";

// The reads the page makes. `requestOfAudio` is called only when the deployment's ABI (the
// page's settings: GET /api/verify-config) has it, and a deployment older than the view
// falls back to the log scan.
export const REGISTRY_ABI = parseAbi([
  "function trackOf(bytes32 requestId) view returns (bytes32 audioHash, string cid)",
  "function provenanceOf(bytes32 requestId) view returns (bytes32 manifestHash, string manifestCid)",
  "function verify(bytes32 requestId, bytes32 audioHash) view returns (bool)",
  "function requestOfAudio(bytes32 audioHash) view returns (bytes32 requestId)",
  "event TrackRegistered(bytes32 indexed requestId, bytes32 audioHash, string cid)",
]);
const TRACK_REGISTERED = REGISTRY_ABI.find((item) => item.name === "TrackRegistered");
const ZERO = `0x${"0".repeat(64)}`;

export const LOG_RANGE = 10_000n; // blocks per eth_getLogs (halved when the node refuses)
export const MAX_SCAN_BLOCKS = 1_000_000n; // a scan covers at most this many blocks

// The chain could not be asked (no answer, or an error answer): the verdict is CANNOT VERIFY.
export class ChainProblem extends Error {
  constructor(message, unreachable) {
    super(message);
    this.unreachable = unreachable;
  }
}

export function chainProblem(error, rpcUrl, timeoutMs) {
  if (!(error instanceof BaseError)) return error;
  if (error.walk((e) => e instanceof TimeoutError)) {
    return new ChainProblem(`${rpcUrl} did not answer within ${timeoutMs / 1000} s`, true);
  }
  if (error.walk((e) => e instanceof HttpRequestError)) {
    const http = error.walk((e) => e instanceof HttpRequestError);
    const why = http.status ? `HTTP ${http.status}` : "no connection";
    return new ChainProblem(`cannot reach ${rpcUrl} (${why})`, true);
  }
  return new ChainProblem(error.shortMessage || error.message, false);
}

// A deployment without the view: the call reverts, or answers nothing.
const missingView = (error) =>
  error instanceof BaseError &&
  Boolean(
    error.walk(
      (e) => e instanceof ContractFunctionRevertedError || e instanceof ContractFunctionZeroDataError,
    ),
  );

export class Registry {
  constructor({ rpcUrl, contract, abi, timeoutMs }) {
    this.rpcUrl = rpcUrl;
    this.address = getAddress(contract);
    this.timeoutMs = timeoutMs;
    this.hasRequestOfAudio = (abi || []).some(
      (item) => item.type === "function" && item.name === "requestOfAudio",
    );
    this.client = createPublicClient({
      transport: http(rpcUrl, { timeout: timeoutMs, retryCount: 0 }),
    });
  }

  // Runs fn(client); viem's errors become ChainProblem.
  async ask(fn) {
    try {
      return await fn(this.client);
    } catch (error) {
      throw chainProblem(error, this.rpcUrl, this.timeoutMs);
    }
  }

  chainId() {
    return this.ask((c) => c.getChainId());
  }

  head() {
    return this.ask((c) => c.getBlockNumber({ cacheTime: 0 }));
  }

  async isContract() {
    const code = await this.ask((c) => c.getCode({ address: this.address }));
    return Boolean(code && code !== "0x");
  }

  read(functionName, args) {
    return this.ask((c) =>
      c.readContract({ address: this.address, abi: REGISTRY_ABI, functionName, args }),
    );
  }

  // {audioHash, cid} of a registered request, or null.
  async trackOf(requestId) {
    const [audioHash, cid] = await this.read("trackOf", [requestId]);
    return audioHash === ZERO ? null : { audioHash, cid };
  }

  async provenanceOf(requestId) {
    const [manifestHash, manifestCid] = await this.read("provenanceOf", [requestId]);
    return manifestHash === ZERO ? null : { manifestHash, manifestCid };
  }

  verify(requestId, audioHash) {
    return this.read("verify", [requestId, audioHash]);
  }

  // {ids, how} of the requests registered with audioHash: requestOfAudio when the ABI has it
  // and the deployment answers it, else the log scan. `how` says which, for the reason.
  async idsWithAudioHash(audioHash, fromBlock) {
    if (this.hasRequestOfAudio) {
      try {
        const found = await this.client.readContract({
          address: this.address,
          abi: REGISTRY_ABI,
          functionName: "requestOfAudio",
          args: [audioHash],
        });
        return { ids: found === ZERO ? [] : [found], how: "view" };
      } catch (error) {
        if (!missingView(error)) throw chainProblem(error, this.rpcUrl, this.timeoutMs);
      }
    }
    const scan = await this.scan((log) => log.args.audioHash === audioHash, fromBlock);
    return { ...scan, how: "logs" };
  }

  idsWithCid(cid, fromBlock) {
    return this.scan((log) => log.args.cid === cid, fromBlock);
  }

  // {ids, from, to}: request ids of the TrackRegistered logs that `keep` from `fromBlock`
  // (at most MAX_SCAN_BLOCKS back from the head) to the head, oldest first.
  async scan(keep, fromBlock) {
    const head = await this.head();
    let start = BigInt(fromBlock);
    if (head - start + 1n > MAX_SCAN_BLOCKS) start = head - MAX_SCAN_BLOCKS + 1n;
    const from = start;
    const ids = [];
    let step = LOG_RANGE;
    while (start <= head) {
      const end = start + step - 1n < head ? start + step - 1n : head;
      let logs;
      try {
        logs = await this.client.getLogs({
          address: this.address,
          event: TRACK_REGISTERED,
          fromBlock: start,
          toBlock: end,
        });
      } catch (error) {
        const problem = chainProblem(error, this.rpcUrl, this.timeoutMs);
        if (problem.unreachable || step === 1n) throw problem;
        step = step / 2n > 0n ? step / 2n : 1n; // the node refused the range: a smaller one
        continue;
      }
      for (const log of logs) if (keep(log)) ids.push(log.args.requestId);
      start = end + 1n;
    }
    return { ids, from, to: head };
  }

  // Where requestId was registered: {block, tx} of its TrackRegistered log, or null.
  async registration(requestId, fromBlock) {
    const logs = await this.ask((c) =>
      c.getLogs({
        address: this.address,
        event: TRACK_REGISTERED,
        args: { requestId },
        fromBlock: BigInt(fromBlock),
        toBlock: "latest",
      }),
    );
    if (logs.length === 0) return null;
    return { block: logs[0].blockNumber, tx: logs[0].transactionHash };
  }
}
