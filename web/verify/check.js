// The check, step for step as `acesteps verify` runs it (acesteps/verify.py, _verify): what is
// asked, the chain, the registration, the bytes hashed here, the manifest, the verdict. Its
// result has the fields of the command's JSON verdict, camelCase, as GET .../verify has them.
import { isAddress } from "viem";
import { ChainProblem, Registry } from "./chain.js";
import { TooLarge, hashBytes, keccakHex, sniffType, streamChunks } from "./hashing.js";
import { parseTarget } from "./target.js";
import { MANIFEST_NOTE, REASON, STATUS } from "./words.js";

export const MAX_MANIFEST_BYTES = 1 << 20;

class Unreachable extends Error {}

// GET gateway/ipfs/cid as a stream of chunks; the timeout is per read (no answer or no
// progress for timeoutMs aborts), so a slow but moving download goes on.
async function* fromGateway(url, timeoutMs) {
  const abort = new AbortController();
  let timer = setTimeout(() => abort.abort(), timeoutMs);
  const rearm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => abort.abort(), timeoutMs);
  };
  try {
    let answer;
    try {
      answer = await fetch(url, { signal: abort.signal });
    } catch (error) {
      throw new Unreachable(
        abort.signal.aborted
          ? `gateway: no answer from ${url} within ${timeoutMs / 1000} s`
          : `gateway: cannot reach ${url}`,
      );
    }
    if (answer.status !== 200) {
      const text = (await answer.text().catch(() => "")).trim().slice(0, 200);
      throw new Unreachable(`HTTP ${answer.status} from the gateway: ${text}`);
    }
    try {
      for await (const chunk of streamChunks(answer.body)) {
        rearm();
        yield chunk;
      }
    } catch (error) {
      if (error instanceof TooLarge) throw error;
      throw new Unreachable(
        abort.signal.aborted
          ? `gateway: ${url} stopped sending for ${timeoutMs / 1000} s`
          : `gateway: ${error.message}`,
      );
    }
  } finally {
    clearTimeout(timer);
  }
}

async function readAll(url, timeoutMs, maxBytes) {
  const parts = [];
  let size = 0;
  for await (const chunk of fromGateway(url, timeoutMs)) {
    size += chunk.byteLength;
    if (size > maxBytes) throw new Unreachable(`larger than ${maxBytes} bytes`);
    parts.push(chunk);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    all.set(part, at);
    at += part.byteLength;
  }
  return all;
}

// The bytes to check: a File, or a CID read from a gateway. hash() gives {audioHash, cid,
// size} or a reason (string) when they cannot be read.
function fileSource(file, maxBytes, onBytes) {
  return {
    kind: "file",
    describe: () => `file ${file.name}`,
    async hash() {
      if (file.size > maxBytes) {
        return `the file is ${file.size} bytes, larger than this page checks (${maxBytes} bytes)`;
      }
      try {
        return await hashBytes(streamChunks(file.stream()), { maxBytes, onBytes });
      } catch (error) {
        if (error instanceof TooLarge) return REASON.tooLarge(maxBytes);
        return REASON.unreachable(`cannot read ${file.name}: ${error.message}`);
      }
    },
  };
}

function gatewaySource(gateway, timeoutMs, maxBytes, onBytes) {
  const base = gateway.replace(/\/+$/, "");
  return {
    kind: "gateway",
    gateway: base,
    describe: (cid) => `gateway ${base}/ipfs/${cid}`,
    async hash(cid) {
      try {
        return await hashBytes(fromGateway(`${base}/ipfs/${cid}`, timeoutMs), {
          maxBytes,
          onBytes,
        });
      } catch (error) {
        if (error instanceof TooLarge) return REASON.tooLarge(maxBytes);
        if (error instanceof Unreachable) return REASON.unreachable(error.message);
        throw error;
      }
    },
  };
}

function settingsProblem(settings) {
  if (!/^https?:\/\/\S+$/.test(settings.rpcUrl || "")) {
    return "RPC URL: an http:// or https:// URL of an Ethereum JSON-RPC endpoint";
  }
  if (!isAddress(settings.contract || "", { strict: false })) {
    return "contract: the registry's address, 0x + 40 hex";
  }
  if (!/^https?:\/\/\S+$/.test(settings.gatewayUrl || "")) {
    return "IPFS gateway: an http:// or https:// URL";
  }
  if (!/^\d+$/.test(String(settings.fromBlock))) return "from block: a block number, 0 or more";
  return null;
}

// The verdict for `targetText` (request id, CID, gateway URL or empty) and `file` (a File or
// null), asking the chain at settings.rpcUrl. steps.onStep(text) and steps.onBytes(n) follow it.
export async function check(targetText, file, settings, steps = {}) {
  const onStep = steps.onStep || (() => {});
  const target = (targetText || "").trim();
  let v = { status: STATUS.UNKNOWN, reason: "", target, contract: settings.contract || null };
  const asked = parseTarget(target);
  if (asked === null) return { ...v, reason: REASON.malformed(target) };
  if (!asked.requestId && !asked.cid && !file) {
    return { ...v, reason: "drop or pick a file, or give a request id, a CID or a gateway URL" };
  }
  const problem = settingsProblem(settings);
  if (problem) return { ...v, reason: problem };
  const fromBlock = BigInt(settings.fromBlock);
  const source = file
    ? fileSource(file, settings.maxBytes, steps.onBytes)
    : gatewaySource(asked.gateway || settings.gatewayUrl, settings.timeoutMs, settings.maxBytes,
        steps.onBytes);
  if (file) v.fileType = await fileType(file);

  const registry = new Registry({
    rpcUrl: settings.rpcUrl,
    contract: settings.contract,
    abi: settings.abi,
    timeoutMs: settings.timeoutMs,
  });
  v.contract = registry.address;
  try {
    return await verdictOf(v, asked, source, registry, fromBlock, onStep);
  } catch (error) {
    if (error instanceof ChainProblem) {
      const reason = error.unreachable
        ? REASON.chainUnreachable(error.message)
        : REASON.chainError(error.message);
      return { ...v, status: STATUS.UNKNOWN, reason };
    }
    throw error;
  }
}

async function fileType(file) {
  const head = new Uint8Array(await file.slice(0, 16).arrayBuffer());
  const sniffed = sniffType(head);
  if (sniffed) return sniffed;
  const said = file.type ? ` (the browser calls it ${file.type})` : "";
  return `not an audio file this page recognises${said}: its bytes are checked all the same`;
}

async function verdictOf(v, asked, source, registry, fromBlock, onStep) {
  // 1. The chain: is there a registry, and which request is meant?
  onStep("Asking the chain…");
  v.chainId = await registry.chainId();
  if (!(await registry.isContract())) {
    return { ...v, reason: REASON.noContract(registry.address, v.chainId) };
  }
  let hashed = null;
  let ids;
  if (asked.requestId) {
    ids = [asked.requestId];
  } else if (asked.cid) {
    onStep("Searching the TrackRegistered logs for the CID…");
    const found = await registry.idsWithCid(asked.cid, fromBlock);
    v.lookup = `TrackRegistered logs, blocks ${found.from}-${found.to}`;
    if (found.ids.length === 0) {
      return { ...v, status: STATUS.NOT_REGISTERED, reason: REASON.noCid(asked.cid, found.from) };
    }
    ids = found.ids;
  } else {
    v.source = source.describe("");
    onStep("Hashing the file…");
    const started = performance.now();
    const got = await source.hash("");
    v.hashMs = Math.round(performance.now() - started);
    if (typeof got === "string") return { ...v, reason: got };
    hashed = got;
    Object.assign(v, { computedAudioHash: got.audioHash, computedCid: got.cid, size: got.size });
    onStep("Looking the audioHash up on chain…");
    const found = await registry.idsWithAudioHash(got.audioHash, fromBlock);
    v.lookup =
      found.how === "view" ? "requestOfAudio" : `TrackRegistered logs, blocks ${found.from}-${found.to}`;
    if (found.ids.length === 0) {
      const reason =
        found.how === "view"
          ? REASON.noAudioView(got.audioHash)
          : REASON.noAudioLog(got.audioHash, found.from);
      return { ...v, status: STATUS.NOT_REGISTERED, reason };
    }
    ids = found.ids;
  }
  const requestId = ids[0];
  Object.assign(v, { requestId, alsoRegisteredAs: ids.slice(1) });

  // 2. The registration.
  onStep("Reading the registration…");
  const track = await registry.trackOf(requestId);
  if (track === null) {
    return { ...v, status: STATUS.NOT_REGISTERED, reason: REASON.notRegistered(requestId) };
  }
  Object.assign(v, { onchainAudioHash: track.audioHash, onchainCid: track.cid });
  try {
    const where = await registry.registration(requestId, fromBlock);
    if (where) {
      const head = await registry.head();
      Object.assign(v, {
        registeredBlock: Number(where.block),
        registeredTx: where.tx,
        confirmations: Number(head - where.block + 1n),
      });
    }
  } catch (error) {
    if (!(error instanceof ChainProblem)) throw error; // the verdict does not need it
  }

  // 3. The bytes, hashed here (once: the bytes alone were hashed above).
  if (hashed === null) {
    v.source = source.describe(track.cid);
    onStep(source.kind === "file" ? "Hashing the file…" : "Fetching and hashing the bytes…");
    const started = performance.now();
    const got = await source.hash(track.cid);
    v.hashMs = Math.round(performance.now() - started);
    if (typeof got === "string") return { ...v, reason: got };
    hashed = got;
  }
  Object.assign(v, {
    computedAudioHash: hashed.audioHash,
    computedCid: hashed.cid,
    size: hashed.size,
  });
  v.contractVerify = await registry.verify(requestId, hashed.audioHash);
  onStep("Checking the generation manifest…");
  Object.assign(v, await manifestOf(registry, requestId, source, track));

  // 4. The verdict.
  v.hashMatches = v.onchainAudioHash === v.computedAudioHash;
  v.cidMatches = v.onchainCid === v.computedCid;
  const differs = [];
  if (!v.hashMatches) differs.push("audioHash");
  if (!v.cidMatches) differs.push("CID");
  if (differs.length) {
    let reason = REASON.differ(differs);
    if (v.manifestMatches === false) reason += `; ${REASON.manifestDiffers}`;
    if (v.editSourceMatches === false) reason += `; ${sourceDiffers(v)}`;
    return { ...v, status: STATUS.MISMATCH, reason };
  }
  if (v.manifestMatches === false) {
    return { ...v, status: STATUS.MISMATCH, reason: `the bytes match, but ${REASON.manifestDiffers}` };
  }
  if (v.editSourceMatches === false) {
    return { ...v, status: STATUS.MISMATCH, reason: `the bytes match, but ${sourceDiffers(v)}` };
  }
  return { ...v, status: STATUS.MATCH, reason: REASON.match };
}

// The registered generation manifest, checked as the command checks it: its bytes hash to
// the registered manifestHash, it names this request and describes the registered file.
async function manifestOf(registry, requestId, source, track) {
  const provenance = await registry.provenanceOf(requestId);
  if (provenance === null) return { manifestNote: MANIFEST_NOTE.none };
  const found = {
    onchainManifestHash: provenance.manifestHash,
    onchainManifestCid: provenance.manifestCid,
  };
  if (source.kind === "file") return { ...found, manifestNote: MANIFEST_NOTE.localFile };
  const cid = provenance.manifestCid;
  let data;
  try {
    data = await readAll(`${source.gateway}/ipfs/${cid}`, 30_000, MAX_MANIFEST_BYTES);
  } catch (error) {
    return { ...found, manifestNote: `manifest ${cid} unreachable: ${error.message}` };
  }
  const wrong = (note) => ({ ...found, manifestMatches: false, manifestNote: note });
  const got = keccakHex(data);
  if (got !== provenance.manifestHash) {
    return wrong(`the manifest's bytes hash to ${got}, the chain registered ${provenance.manifestHash}`);
  }
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch (error) {
    return wrong(`not a generation manifest: ${error.message}`);
  }
  const named = manifest && manifest.request && manifest.request.request_id;
  if (named !== requestId) return wrong(`the manifest describes ${named}`);
  const file = (manifest.output && manifest.output.file) || {};
  if (file.audio_hash !== track.audioHash || file.cid !== track.cid) {
    return wrong(MANIFEST_NOTE.otherFile);
  }
  const edit = await editOf(registry, manifest.request);
  return { ...found, ...edit, manifestMatches: true, manifestNote: MANIFEST_NOTE.matches };
}

// An edit's source as its manifest records it (request.edit_source), a track source checked
// against its own registration: the manifest's audioHash of it must be the registered one.
async function editOf(registry, request) {
  const s = request.edit_source;
  if (!s) return {};
  const edit = {
    editTask: (request.options && request.options.task) || null,
    editSourceKind: s.kind,
    editSourceId: s.request_id || null,
    editSourceCid: s.cid,
    editSourceAudioHash: s.audio_hash,
  };
  if (s.kind !== "track") return edit; // an upload: only the manifest vouches for its bytes
  const registered = await registry.trackOf(s.request_id);
  const onchain = registered === null ? null : registered.audioHash;
  return {
    ...edit,
    editSourceOnchainAudioHash: onchain,
    editSourceMatches: onchain === s.audio_hash,
  };
}

function sourceDiffers(v) {
  return v.editSourceOnchainAudioHash === null
    ? REASON.sourceNotRegistered(v.editSourceId)
    : REASON.sourceDiffers(v.editSourceId, v.editSourceOnchainAudioHash, v.editSourceAudioHash);
}

