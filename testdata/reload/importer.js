// The version comes from an imported file, so editing only the import
// must reload.
import { VERSION } from "./lib/version.js";

export default {
  outbound(request, env, ctx) {
    return new Response(VERSION);
  },
};
