// A and B are set at different points of module evaluation, both from the
// version; a response that mixed two script versions would show two
// different numbers.
const A = "__V__";
let spin = 0;
for (let i = 0; i < 2000; i++) spin += i;
const B = "__V__";

export default {
  outbound(request, env, ctx) {
    return new Response(A + ":" + B + (spin > 0 ? "" : "!"));
  },
};
