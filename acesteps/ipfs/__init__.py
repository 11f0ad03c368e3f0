"""IPFS: a thin client of the Kubo RPC API (`acesteps.ipfs.kubo`) and the local CID
computation that checks it (`acesteps.ipfs.unixfs`)."""
