export default {
  allowedHosts: ["a.test",
};
