// Compiles Solidity offline with solc-js: standard JSON in on stdin, standard JSON out on stdout.
// Run with NODE_PATH pointing at the node_modules that scripts/stack installed.
const solc = require("solc");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  process.stdout.write(solc.compile(input));
});
