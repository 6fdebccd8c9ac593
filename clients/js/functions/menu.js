// A list of rows, which rpc() callers filter, order, page and count.
const MENU = [
  { id: 1, name: 'tea', price: 450 },
  { id: 2, name: 'cake', price: 325 },
  { id: 3, name: 'teapot', price: 1999 },
];
export default ({ min }) => MENU.filter((item) => item.price >= min);
