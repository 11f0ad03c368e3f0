// The two names of a file's bytes, computed here in the browser as they stream in:
// - audioHash: keccak256 of the bytes (@noble/hashes, streaming);
// - CID: the CIDv1 Kubo's `ipfs add --cid-version 1` gives them, with the publisher's fixed
//   parameters (acesteps/ipfs/unixfs.py): sha2-256, raw leaves, fixed 256 KiB chunks,
//   balanced layout of at most 174 links per node, Links before Data. ipfs-unixfs-importer
//   builds that DAG; its blocks are hashed and dropped (as --only-hash), never kept.
import { keccak_256 } from "@noble/hashes/sha3";
import { bytesToHex } from "@noble/hashes/utils";
import { importer } from "ipfs-unixfs-importer";
import { fixedSize } from "ipfs-unixfs-importer/chunker";
import { balanced } from "ipfs-unixfs-importer/layout";

export const CHUNK_SIZE = 256 * 1024;
export const MAX_LINKS = 174;

const IMPORT_OPTIONS = {
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  fieldOrder: "links-first",
  wrapWithDirectory: false,
  chunker: fixedSize({ chunkSize: CHUNK_SIZE }),
  layout: balanced({ maxChildrenPerNode: MAX_LINKS }),
};

// Where the importer "writes" its blocks: nowhere. The CID is all that is wanted.
const DISCARD = { put: async (cid) => cid };

export class TooLarge extends Error {}

// The chunks of a ReadableStream (a File's, a fetch body's); cancels it when left early.
export async function* streamChunks(stream) {
  const reader = stream.getReader();
  let done = false;
  try {
    while (!done) {
      const next = await reader.read();
      done = next.done;
      if (!done) yield next.value;
    }
  } finally {
    if (!done) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

// {audioHash, cid, size} of the bytes `chunks` (an async iterable of Uint8Array) yields;
// throws TooLarge past maxBytes. onBytes(size) is called as they arrive.
export async function hashBytes(chunks, { maxBytes = Infinity, onBytes } = {}) {
  if (!globalThis.crypto || !globalThis.crypto.subtle) {
    throw new Error(
      "this browser gives the page no WebCrypto (crypto.subtle): open it over https or " +
        "on localhost to compute CIDs",
    );
  }
  const keccak = keccak_256.create();
  let size = 0;
  async function* counted() {
    for await (const chunk of chunks) {
      size += chunk.byteLength;
      if (size > maxBytes) throw new TooLarge(`larger than ${maxBytes} bytes`);
      keccak.update(chunk);
      if (onBytes) onBytes(size);
      yield chunk;
    }
  }
  let root = null;
  for await (const entry of importer([{ content: counted() }], DISCARD, IMPORT_OPTIONS)) {
    root = entry;
  }
  return { audioHash: `0x${bytesToHex(keccak.digest())}`, cid: root.cid.toString(), size };
}

// keccak256 of a whole (small) byte array, 0x-hex.
export const keccakHex = (bytes) => `0x${bytesToHex(keccak_256(bytes))}`;

// What the first bytes say the file is; any bytes can be checked, this only tells the user.
export function sniffType(head) {
  const ascii = (from, to) => String.fromCharCode(...head.subarray(from, to));
  if (head.length >= 3 && ascii(0, 3) === "ID3") return "MP3 audio";
  if (head.length >= 2 && head[0] === 0xff && (head[1] & 0xe0) === 0xe0) return "MP3 audio";
  if (head.length >= 12 && ascii(0, 4) === "RIFF" && ascii(8, 12) === "WAVE") return "WAV audio";
  if (head.length >= 4 && ascii(0, 4) === "fLaC") return "FLAC audio";
  if (head.length >= 4 && ascii(0, 4) === "OggS") return "Ogg audio";
  return null;
}
