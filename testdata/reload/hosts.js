// The reload test's Compile hook rejects the host pattern "invalid[".
export default {
  allowedHosts: ["__HOST__"],
  outbound(request, env, ctx) {
    return new Response("hosts");
  },
};
