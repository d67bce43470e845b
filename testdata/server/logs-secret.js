// A careless script: it logs its secret and throws it.
export default {
  outbound(request, env) {
    console.log("using key", env.API_KEY, { nested: env.API_KEY });
    console.error(`calling with ${env.API_KEY}`);
    throw new Error("bad key " + env.API_KEY);
  },
};
