export default ({ n, tags }) => ({ doubled: n * 2, tags });
