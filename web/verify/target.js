// What the user pasted: a request id, a CID or a gateway URL, parsed as `acesteps verify`
// parses its TARGET (acesteps/verify.py, parse_target; the same patterns). No imports.

const REQUEST_ID = /^0x[0-9a-fA-F]{64}$/;
const CID = /^(b[a-z2-7]{20,200}|Qm[1-9A-HJ-NP-Za-km-z]{44})$/;
const GATEWAY_PATH = /^(https?:\/\/[^/?#]+(?:\/[^?#]*?)?)\/ipfs\/([^/?#]+)/;
const GATEWAY_HOST = /^(https?):\/\/([^./?#]+)\.ipfs\.([^/?#]+)/;

export const isCid = (text) => CID.test(text);

// {requestId} | {cid, gateway?} | {} for nothing given | null when it is none of them.
export function parseTarget(text) {
  const t = (text || "").trim();
  if (t === "") return {};
  if (REQUEST_ID.test(t)) return { requestId: t.toLowerCase() };
  if (CID.test(t)) return { cid: t };
  let found = GATEWAY_PATH.exec(t);
  let base;
  let cid;
  if (found) {
    [, base, cid] = found;
  } else if ((found = GATEWAY_HOST.exec(t))) {
    base = `${found[1]}://${found[3]}`;
    cid = found[2];
  } else {
    return null;
  }
  return CID.test(cid) ? { cid, gateway: base } : null;
}
