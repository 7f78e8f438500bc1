function n(e){return e.role!=="VIEWER"}var o=new Intl.DateTimeFormat(void 0,{dateStyle:"medium",timeStyle:"short"});export{n as a};
