// Imports a virtual module that only BundleFile's Modules option provides.
import { greet } from "outbound:extra";

export function run(name: string): string {
  return greet(name);
}
