#!/usr/bin/env node
// An AceSteps dApp end to end, with viem: read the deployment artifact, send
// requestGeneration (or, with options, requestGenerationWithOptions), wait for the
// TrackRegistered event of the request, fetch the file from an IPFS gateway, hash it
// (keccak256) and check the hash with the contract's verify.
//
//   NODE_PATH=$(examples/dapp/install) node examples/dapp/request-and-verify.cjs \
//     --rpc http://127.0.0.1:18545 --artifact .cache/run/deployments/31337.json \
//     --gateway http://127.0.0.1:18080 --private-key 0x...
//
// Every option can come from the environment instead: ACESTEPS_RPC_URL, ACESTEPS_ARTIFACT (a
// file, or the API's http://.../api/contract), ACESTEPS_IPFS_GATEWAY_URL, DAPP_PRIVATE_KEY,
// DAPP_PROMPT, DAPP_DURATION (seconds, 5 to 240), DAPP_TIMEOUT_S, DAPP_OPTIONS. Options
// (--options) are JSON with any of seed, format, bpm, key, timeSignature, vocalLanguage,
// instrumental, tags, model, preset (a style preset: GET /api/presets; contract 1.3.0),
// variations (2 to 4 tracks; contract 1.3.0), e.g.
// '{"bpm": 96, "key": "F# minor", "format": "flac"}'; the request then pays
// requestFeeFor(model) per track (a preset changes no fee). Prints one JSON object and exits 0
// when the file verifies; 1 when it does not, or the request failed or was canceled. With
// variations, every track is waited for and verified: the request's own at the top level, its
// variations (from the VariationRequested events of the request's receipt) under
// "variations", and exit 0 only when all of them verify.
"use strict";

const { readFile } = require("node:fs/promises");
const { parseArgs } = require("node:util");
const {
  createPublicClient,
  createWalletClient,
  defineChain,
  http,
  keccak256,
  parseEventLogs,
} = require("viem");
const { privateKeyToAccount } = require("viem/accounts");

function options() {
  const { values } = parseArgs({
    options: {
      rpc: { type: "string", default: process.env.ACESTEPS_RPC_URL },
      artifact: { type: "string", default: process.env.ACESTEPS_ARTIFACT },
      gateway: { type: "string", default: process.env.ACESTEPS_IPFS_GATEWAY_URL },
      "private-key": { type: "string", default: process.env.DAPP_PRIVATE_KEY },
      prompt: { type: "string", default: process.env.DAPP_PROMPT || "a calm piano piece" },
      duration: { type: "string", default: process.env.DAPP_DURATION || "5" },
      timeout: { type: "string", default: process.env.DAPP_TIMEOUT_S || "300" },
      options: { type: "string", default: process.env.DAPP_OPTIONS },
    },
  });
  for (const name of ["rpc", "artifact", "gateway", "private-key"]) {
    if (!values[name]) throw new Usage(`--${name} is required (see the head of this file)`);
  }
  return values;
}

class Usage extends Error {}

/** The contract's Options struct from the JSON a user wrote; zero values: "not asked". */
function optionsStruct(json) {
  let asked;
  try {
    asked = JSON.parse(json);
  } catch (error) {
    throw new Usage(`--options is not JSON: ${error.message}`);
  }
  const zero = {
    seed: 0, format: "", bpm: 0, key: "", timeSignature: 0, vocalLanguage: "",
    instrumental: false, tags: [], model: "", preset: "", variations: 0,
  };
  const unknown = Object.keys(asked).filter((name) => !(name in zero));
  if (unknown.length) throw new Usage(`--options: unknown option(s) ${unknown.join(", ")}`);
  return { ...zero, ...asked, hasSeed: asked.seed !== undefined };
}

/** The deployment artifact: deployments/<chainId>.json, or GET /api/contract. */
async function loadArtifact(where) {
  if (/^https?:\/\//.test(where)) {
    const answer = await fetch(where);
    if (!answer.ok) throw new Error(`${where}: HTTP ${answer.status}`);
    return answer.json();
  }
  return JSON.parse(await readFile(where, "utf8"));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const opts = options();
  const artifact = await loadArtifact(opts.artifact);
  const chain = defineChain({
    id: artifact.chainId,
    name: `chain ${artifact.chainId}`,
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [opts.rpc] } },
  });
  const transport = http(opts.rpc);
  const publicClient = createPublicClient({ chain, transport, pollingInterval: 250 });
  const account = privateKeyToAccount(opts["private-key"]);
  const wallet = createWalletClient({ account, chain, transport });
  const registry = { address: artifact.address, abi: artifact.abi };

  const onChain = await publicClient.getChainId();
  if (onChain !== artifact.chainId) {
    throw new Error(`the node is on chain ${onChain}, the artifact describes ${artifact.chainId}`);
  }

  // 1. Request: pay exactly the current fee (per track); the simulation tells the request id.
  const args = [opts.prompt, "", Number(opts.duration)];
  let functionName = "requestGeneration";
  let fee;
  if (opts.options) {
    const struct = optionsStruct(opts.options);
    functionName = "requestGenerationWithOptions";
    args.push(struct);
    const share = await publicClient.readContract({
      ...registry,
      functionName: "requestFeeFor",
      args: [struct.model],
    });
    fee = share * BigInt(Math.max(1, struct.variations)); // 0 and 1: one track
  } else {
    fee = await publicClient.readContract({ ...registry, functionName: "requestFee" });
  }
  const { request, result: requestId } = await publicClient.simulateContract({
    ...registry,
    account,
    functionName,
    args,
    value: fee,
  });
  const txHash = await wallet.writeContract(request);
  const receipt = await publicClient.waitForTransactionReceipt({ hash: txHash });
  if (receipt.status !== "success") throw new Error(`${functionName} reverted: ${txHash}`);
  const [requested] = parseEventLogs({
    abi: artifact.abi,
    eventName: "GenerationRequested",
    logs: receipt.logs,
  });
  if (requested.args.requestId !== requestId) throw new Error("the request id is not the simulated one");
  // Its variations, if it asked for any: requests of their own, made in the same transaction.
  const variations = parseEventLogs({
    abi: artifact.abi,
    eventName: "VariationRequested",
    logs: receipt.logs,
  }).map((log) => ({ requestId: log.args.requestId, variation: log.args.index }));

  // 2. and 3. Wait for each track, fetch it, hash it, verify it.
  const deadline = Date.now() + Number(opts.timeout) * 1000;
  const follow = (id) =>
    followTrack({
      publicClient,
      registry,
      gateway: opts.gateway,
      requestId: id,
      fromBlock: receipt.blockNumber,
      deadline,
      timeout: opts.timeout,
    });
  const result = { requestId, txHash, ...(await follow(requestId)) };
  if (variations.length) {
    result.variations = [];
    for (const { requestId: id, variation } of variations) {
      result.variations.push({ requestId: id, variation, ...(await follow(id)) });
    }
  }
  const all = [result, ...(result.variations || [])];
  return report(result, all.every((track) => track.verified) ? 0 : 1);
}

/** Wait for the registration of `requestId` (or its failure or cancellation) from the
 * request's block, fetch the file from IPFS, hash it here and check it with the contract. */
async function followTrack({ publicClient, registry, gateway, requestId, fromBlock, deadline, timeout }) {
  const byId = { ...registry, args: { requestId }, fromBlock };
  let registered;
  while (!registered) {
    [registered] = await publicClient.getContractEvents({ ...byId, eventName: "TrackRegistered" });
    if (registered) break;
    for (const eventName of ["GenerationFailed", "RequestCanceled"]) {
      const [ended] = await publicClient.getContractEvents({ ...byId, eventName });
      if (ended) return { verified: false, ended: eventName, ...plain(ended.args) };
    }
    if (Date.now() > deadline) throw new Error(`no TrackRegistered for ${requestId} in ${timeout} s`);
    await sleep(500);
  }
  const { audioHash, cid } = registered.args;

  const url = `${gateway.replace(/\/$/, "")}/ipfs/${cid}`;
  const answer = await fetch(url);
  if (!answer.ok) throw new Error(`${url}: HTTP ${answer.status}`);
  const bytes = new Uint8Array(await answer.arrayBuffer());
  const computedHash = keccak256(bytes);
  const verified = await publicClient.readContract({
    ...registry,
    functionName: "verify",
    args: [requestId, computedHash],
  });
  return {
    registeredIn: registered.transactionHash,
    block: Number(registered.blockNumber),
    cid,
    bytes: bytes.length,
    audioHash,
    computedHash,
    verified: verified && computedHash === audioHash,
  };
}

function plain(args) {
  return Object.fromEntries(
    Object.entries(args).map(([k, v]) => [k, typeof v === "bigint" ? v.toString() : v]),
  );
}

function report(result, code) {
  process.stdout.write(JSON.stringify(result) + "\n");
  return code;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`error: ${error.shortMessage || error.message}\n`);
    process.exit(error instanceof Usage ? 2 : 1);
  },
);
