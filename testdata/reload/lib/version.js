export const VERSION = "lib-1";
