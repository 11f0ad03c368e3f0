// The verdict vocabulary: the same statuses, headlines, exit codes and reasons as
// `acesteps verify` (acesteps/verify.py, acesteps/cli/verify.py), so that the page and the
// command say the same thing for the same input. tests/unit/test_verify_page.py holds them
// equal. No imports: Node.js reads this file as it is.

export const STATUS = Object.freeze({
  MATCH: "MATCH",
  MISMATCH: "MISMATCH",
  NOT_REGISTERED: "NOT_REGISTERED",
  UNKNOWN: "UNKNOWN",
});

export const HEADLINE = Object.freeze({
  MATCH: "MATCH",
  MISMATCH: "MISMATCH",
  NOT_REGISTERED: "NOT REGISTERED",
  UNKNOWN: "CANNOT VERIFY",
});

export const EXIT_CODE = Object.freeze({ MATCH: 0, MISMATCH: 1, UNKNOWN: 2, NOT_REGISTERED: 3 });

export const REASON = Object.freeze({
  malformed: (text) => `'${text}' is neither a request id (0x + 64 hex), a CID nor a gateway URL`,
  noContract: (address, chainId) => `no contract at ${address} on chain ${chainId}`,
  noCid: (cid, fromBlock) => `no TrackRegistered log with CID ${cid} from block ${fromBlock}`,
  noAudioLog: (hash, fromBlock) =>
    `no TrackRegistered log with audioHash ${hash} from block ${fromBlock}`,
  noAudioView: (hash) => `no request is registered with audioHash ${hash} (requestOfAudio)`,
  notRegistered: (requestId) => `request ${requestId} is not registered on this contract`,
  differ: (names) => `${names.join(" and ")} differ from the registered ones`,
  manifestDiffers: "the generation manifest does not match its registration",
  sourceNotRegistered: (requestId) =>
    `the edit's source, request ${requestId}, is not registered on this contract`,
  sourceDiffers: (requestId, onchain, recorded) =>
    `the edit's source, request ${requestId}, is registered with audioHash ${onchain}, ` +
    `not the ${recorded} its manifest records`,
  match: "audioHash and CID equal the registered ones",
  tooLarge: (maxBytes) => `content unreachable: larger than ${maxBytes} bytes`,
  unreachable: (why) => `content unreachable: ${why}`,
  chainUnreachable: (why) => `chain unreachable: ${why}`,
  chainError: (why) => `chain error: ${why}`,
});

export const MANIFEST_NOTE = Object.freeze({
  none: "no generation manifest is registered for this track",
  localFile: "not checked: the bytes came from a local file",
  matches: "the manifest matches its registration",
  otherFile: "the manifest describes another file than the registered one",
});
