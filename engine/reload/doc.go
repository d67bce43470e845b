// Package reload owns hot reload of the policy script and its env: it
// watches the bundle's input files and the env file, compiles a new script
// generation off to the side, swaps it in atomically when it is good, and
// retires the old generation's isolate pool once its last request is done.
// It does not decide policy (the Compile hook does that) and it does not
// parse the env file format (package dotenv does).
package reload
