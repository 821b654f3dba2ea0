"""Slot lexicons: language-independent concepts with their surface form in every language.

A slot value is a concept id (``paris``, ``kitchen``, ``07:30``); rendering it in a
language gives a :class:`SlotPhrase` whose ``value`` is the slot span and whose
prefix/suffix carry the grammar that depends on the value (gender, elision,
Czech case), so templates stay simple and grammatical.

Tables are one row per concept with the columns ``en ; fr ; de ; es ; it ; nl ;
pt ; cs`` (Czech sometimes has several columns, one per case it needs).
"""

from __future__ import annotations

from collections.abc import Callable

from speechssl.data.synth.content import numbers
from speechssl.data.synth.content.grammar import SlotPhrase, Token, slot_phrase
from speechssl.data.synth.content.pos_lexicon import LEXICON

LANGUAGES = ("en", "fr", "de", "es", "it", "nl", "pt", "cs")


def _table(block: str, columns: int = len(LANGUAGES)) -> dict[str, tuple[str, ...]]:
    rows: dict[str, tuple[str, ...]] = {}
    for line in block.strip().splitlines():
        key, _, rest = line.partition(":")
        cells = tuple(cell.strip() for cell in rest.split(";"))
        if len(cells) != columns or not all(cells):
            raise ValueError(f"table row {key.strip()!r} has {len(cells)} cells, expected {columns}")
        rows[key.strip()] = cells
    return rows


def _column(lang: str) -> int:
    return LANGUAGES.index(lang)


# ---------------------------------------------------------------- cities

# Czech needs two cases: "do" + genitive (to) and "v" + locative (in).
CITIES = _table("""
paris      : paris ; paris ; paris ; parís ; parigi ; parijs ; paris ; do|paříže ; v|paříži
london     : london ; londres ; london ; londres ; londra ; londen ; londres ; do|londýna ; v|londýně
berlin     : berlin ; berlin ; berlin ; berlín ; berlino ; berlijn ; berlim ; do|berlína ; v|berlíně
rome       : rome ; rome ; rom ; roma ; roma ; rome ; roma ; do|říma ; v|římě
madrid     : madrid ; madrid ; madrid ; madrid ; madrid ; madrid ; madrid ; do|madridu ; v|madridu
lisbon     : lisbon ; lisbonne ; lissabon ; lisboa ; lisbona ; lissabon ; lisboa ; do|lisabonu ; v|lisabonu
vienna     : vienna ; vienne ; wien ; viena ; vienna ; wenen ; viena ; do|vídně ; ve|vídni
prague     : prague ; prague ; prag ; praga ; praga ; praag ; praga ; do|prahy ; v|praze
amsterdam  : amsterdam ; amsterdam ; amsterdam ; ámsterdam ; amsterdam ; amsterdam ; amesterdão ; do|amsterdamu ; v|amsterdamu
brussels   : brussels ; bruxelles ; brüssel ; bruselas ; bruxelles ; brussel ; bruxelas ; do|bruselu ; v|bruselu
munich     : munich ; munich ; münchen ; múnich ; monaco di/ADP baviera ; münchen ; munique ; do|mnichova ; v|mnichově
milan      : milan ; milan ; mailand ; milán ; milano ; milaan ; milão ; do|milána ; v|miláně
barcelona  : barcelona ; barcelone ; barcelona ; barcelona ; barcellona ; barcelona ; barcelona ; do|barcelony ; v|barceloně
venice     : venice ; venise ; venedig ; venecia ; venezia ; venetië ; veneza ; do|benátek ; v|benátkách
florence   : florence ; florence ; florenz ; florencia ; firenze ; florence ; florença ; do|florencie ; ve|florencii
naples     : naples ; naples ; neapel ; nápoles ; napoli ; napels ; nápoles ; do|neapole ; v|neapoli
athens     : athens ; athènes ; athen ; atenas ; atene ; athene ; atenas ; do|atén ; v|aténách
warsaw     : warsaw ; varsovie ; warschau ; varsovia ; varsavia ; warschau ; varsóvia ; do|varšavy ; ve|varšavě
copenhagen : copenhagen ; copenhague ; kopenhagen ; copenhague ; copenaghen ; kopenhagen ; copenhaga ; do|kodaně ; v|kodani
stockholm  : stockholm ; stockholm ; stockholm ; estocolmo ; stoccolma ; stockholm ; estocolmo ; do|stockholmu ; ve|stockholmu
geneva     : geneva ; genève ; genf ; ginebra ; ginevra ; genève ; genebra ; do|ženevy ; v|ženevě
seville    : seville ; séville ; sevilla ; sevilla ; siviglia ; sevilla ; sevilha ; do|sevilly ; v|sevile
hamburg    : hamburg ; hambourg ; hamburg ; hamburgo ; amburgo ; hamburg ; hamburgo ; do|hamburku ; v|hamburku
marseille  : marseille ; marseille ; marseille ; marsella ; marsiglia ; marseille ; marselha ; do|marseille ; v|marseille
lyon       : lyon ; lyon ; lyon ; lyon ; lione ; lyon ; lyon ; do|lyonu ; v|lyonu
new_york   : new york ; new york ; new york ; nueva york ; new york ; new york ; nova iorque ; do|new yorku ; v|new yorku
tokyo      : tokyo ; tokyo ; tokio ; tokio ; tokyo ; tokio ; tóquio ; do|tokia ; v|tokiu
dublin     : dublin ; dublin ; dublin ; dublín ; dublino ; dublin ; dublin ; do|dublinu ; v|dublinu
edinburgh  : edinburgh ; édimbourg ; edinburgh ; edimburgo ; edimburgo ; edinburgh ; edimburgo ; do|edinburghu ; v|edinburghu
budapest   : budapest ; budapest ; budapest ; budapest ; budapest ; boedapest ; budapeste ; do|budapešti ; v|budapešti
zurich     : zurich ; zurich ; zürich ; zúrich ; zurigo ; zürich ; zurique ; do|curychu ; v|curychu
oslo       : oslo ; oslo ; oslo ; oslo ; oslo ; oslo ; oslo ; do|osla ; v|oslu
krakow     : krakow ; cracovie ; krakau ; cracovia ; cracovia ; krakau ; cracóvia ; do|krakova ; v|krakově
brno       : brno ; brno ; brno ; brno ; brno ; brno ; brno ; do|brna ; v|brně
antwerp    : antwerp ; anvers ; antwerpen ; amberes ; anversa ; antwerpen ; antuérpia ; do|antverp ; v|antverpách
salzburg   : salzburg ; salzbourg ; salzburg ; salzburgo ; salisburgo ; salzburg ; salzburgo ; do|salcburku ; v|salcburku
""", columns=9)

# (in, to) prepositions with a city name; Czech is spelled out in the table.
_CITY_PREPS = {
    "en": ("in", "to"), "fr": ("à", "pour"), "de": ("in", "nach"), "es": ("en", "a"),
    "it": ("a", "per"), "nl": ("in", "naar"), "pt": ("em", "para"),
}


def _city(value: str, lang: str, form: str) -> str:
    row = CITIES[value]
    if lang == "cs":
        return {"to": row[7], "in": row[8]}[form]
    name = row[_column(lang)]
    prep = _CITY_PREPS[lang][("in", "to").index(form)]
    if lang == "it" and prep == "a" and name.startswith("a"):
        prep = "ad"  # euphonic d: "ad amsterdam"
    return f"{prep}|{name}"


# ---------------------------------------------------------------- people

# Gender decides Portuguese "ao pedro" / "à ana"; Czech needs the dative.
PERSONS = _table("""
peter     : m ; peter ; pierre ; peter ; pedro ; pietro ; pieter ; pedro ; petrovi
john      : m ; john ; jean ; johann ; juan ; giovanni ; jan ; joão ; janovi
mary      : f ; mary ; marie ; maria ; maría ; maria ; maria ; maria ; marii
anna      : f ; anna ; anne ; anna ; ana ; anna ; anna ; ana ; anně
paul      : m ; paul ; paul ; paul ; pablo ; paolo ; paul ; paulo ; pavlovi
thomas    : m ; thomas ; thomas ; thomas ; tomás ; tommaso ; thomas ; tomás ; tomášovi
michael   : m ; michael ; michel ; michael ; miguel ; michele ; michiel ; miguel ; michalovi
catherine : f ; catherine ; catherine ; katharina ; catalina ; caterina ; catharina ; catarina ; kateřině
elizabeth : f ; elizabeth ; élisabeth ; elisabeth ; isabel ; elisabetta ; elisabeth ; isabel ; alžbětě
james     : m ; james ; jacques ; jakob ; jaime ; giacomo ; jacob ; tiago ; jakubovi
joseph    : m ; joseph ; joseph ; josef ; josé ; giuseppe ; jozef ; josé ; josefovi
francis   : m ; francis ; françois ; franz ; francisco ; francesco ; frans ; francisco ; františkovi
lucy      : f ; lucy ; lucie ; lucia ; lucía ; lucia ; lucia ; lúcia ; lucii
helen     : f ; helen ; hélène ; helene ; elena ; elena ; helena ; helena ; heleně
george    : m ; george ; georges ; georg ; jorge ; giorgio ; joris ; jorge ; jiřímu
charles   : m ; charles ; charles ; karl ; carlos ; carlo ; karel ; carlos ; karlovi
andrew    : m ; andrew ; andré ; andreas ; andrés ; andrea ; andries ; andré ; ondřejovi
stephen   : m ; stephen ; étienne ; stefan ; esteban ; stefano ; stefan ; estêvão ; štěpánovi
margaret  : f ; margaret ; marguerite ; margarete ; margarita ; margherita ; margriet ; margarida ; markétě
theresa   : f ; theresa ; thérèse ; theresa ; teresa ; teresa ; theresia ; teresa ; tereze
martin    : m ; martin ; martin ; martin ; martín ; martino ; maarten ; martim ; martinovi
sophie    : f ; sophie ; sophie ; sophie ; sofía ; sofia ; sofie ; sofia ; sofii
clare     : f ; clare ; claire ; klara ; clara ; chiara ; klara ; clara ; kláře
eve       : f ; eve ; ève ; eva ; eva ; eva ; eva ; eva ; evě
louis     : m ; louis ; louis ; ludwig ; luis ; luigi ; lodewijk ; luís ; ludvíkovi
william   : m ; william ; guillaume ; wilhelm ; guillermo ; guglielmo ; willem ; guilherme ; vilémovi
henry     : m ; henry ; henri ; heinrich ; enrique ; enrico ; hendrik ; henrique ; jindřichovi
emily     : f ; emily ; émilie ; emilie ; emilia ; emilia ; emilia ; emília ; emilii
christine : f ; christine ; christine ; christine ; cristina ; cristina ; christina ; cristina ; kristýně
victor    : m ; victor ; victor ; viktor ; víctor ; vittorio ; victor ; vítor ; viktorovi
julia     : f ; julia ; julie ; julia ; julia ; giulia ; julia ; júlia ; julii
nicholas  : m ; nicholas ; nicolas ; nikolaus ; nicolás ; nicola ; nicolaas ; nicolau ; mikulášovi
anthony   : m ; anthony ; antoine ; anton ; antonio ; antonio ; antoon ; antónio ; antonínovi
agnes     : f ; agnes ; agnès ; agnes ; inés ; agnese ; agnes ; inês ; anežce
""", columns=9)

# Prepositions of the recipient ("a message *to* anna"); Czech uses the bare dative.
_TO_PERSON = {"en": "to", "fr": "à", "de": "an", "es": "a", "it": "a", "nl": "naar"}


def _person(value: str, lang: str, form: str) -> str:
    gender, *names = PERSONS[value]
    name = names[_column(lang)]
    if lang == "cs" or form == "call":
        return name
    if lang == "pt":
        return f"{'ao' if gender == 'm' else 'à'}|{name}"  # a + o / a + a
    prep = _TO_PERSON[lang]
    if lang == "it" and name.startswith("a"):
        prep = "ad"
    return f"{prep}|{name}"


# ---------------------------------------------------------------- days

DAYS = _table("""
today              : today ; aujourd'hui ; heute ; hoy ; oggi ; vandaag ; hoje ; dnes
tomorrow           : tomorrow ; demain ; morgen ; mañana ; domani ; morgen ; amanhã ; zítra
this_morning       : this morning ; ce matin ; heute morgen/NOUN ; esta mañana/NOUN ; stamattina ; vanochtend ; esta manhã ; dnes ráno
this_afternoon     : this afternoon ; cet après-midi ; heute nachmittag ; esta tarde ; oggi pomeriggio ; vanmiddag ; esta tarde ; dnes odpoledne
tonight            : tonight ; ce soir ; heute abend ; esta noche ; stasera ; vanavond ; esta noite ; dnes večer
tomorrow_morning   : tomorrow morning ; demain matin ; morgen früh ; mañana por la mañana/NOUN ; domani mattina ; morgenochtend ; amanhã de manhã ; zítra ráno
tomorrow_afternoon : tomorrow afternoon ; demain après-midi ; morgen nachmittag ; mañana por la tarde ; domani pomeriggio ; morgenmiddag ; amanhã à/ADP tarde ; zítra odpoledne
tomorrow_evening   : tomorrow evening ; demain soir ; morgen abend ; mañana por la noche ; domani sera ; morgenavond ; amanhã à/ADP noite ; zítra večer
weekend            : this weekend ; ce week-end ; am|wochenende ; este fin de semana ; questo fine settimana ; dit weekend ; este fim de semana ; o|víkendu
monday             : on|monday/PROPN ; lundi ; am|montag ; el|lunes ; lunedì ; op|maandag ; na|segunda ; v|pondělí
tuesday            : on|tuesday/PROPN ; mardi ; am|dienstag ; el|martes ; martedì ; op|dinsdag ; na|terça ; v|úterý
wednesday          : on|wednesday/PROPN ; mercredi ; am|mittwoch ; el|miércoles ; mercoledì ; op|woensdag ; na|quarta ; ve|středu
thursday           : on|thursday/PROPN ; jeudi ; am|donnerstag ; el|jueves ; giovedì ; op|donderdag ; na|quinta ; ve|čtvrtek
friday             : on|friday/PROPN ; vendredi ; am|freitag ; el|viernes ; venerdì ; op|vrijdag ; na|sexta ; v|pátek
saturday           : on|saturday/PROPN ; samedi ; am|samstag ; el|sábado ; sabato ; op|zaterdag ; no|sábado ; v|sobotu
sunday             : on|sunday/PROPN ; dimanche ; am|sonntag ; el|domingo ; domenica ; op|zondag ; no|domingo ; v|neděli
""")

# ---------------------------------------------------------------- rooms ("in the kitchen")

ROOMS = _table("""
kitchen      : in the|kitchen ; dans la|cuisine ; in der|küche ; en la|cocina ; in|cucina ; in de|keuken ; na|cozinha ; v|kuchyni
living_room  : in the|living room ; dans le|salon ; im|wohnzimmer ; en el|salón ; in|salotto ; in de|woonkamer ; na|sala de/ADP estar/VERB ; v|obývacím/ADJ pokoji
bedroom      : in the|bedroom ; dans la|chambre ; im|schlafzimmer ; en el|dormitorio ; in|camera da letto ; in de|slaapkamer ; no|quarto ; v|ložnici
bathroom     : in the|bathroom ; dans la|salle de bain ; im|badezimmer ; en el|baño ; in|bagno ; in de|badkamer ; na|casa de banho ; v|koupelně
hallway      : in the|hallway ; dans le|couloir ; im|flur ; en el|pasillo ; nel|corridoio ; in de|gang ; no|corredor ; na|chodbě
office       : in the|office ; dans le|bureau ; im|arbeitszimmer ; en el|despacho ; nello|studio ; in de|werkkamer ; no|escritório ; v|pracovně
garage       : in the|garage ; dans le|garage ; in der|garage ; en el|garaje ; in|garage ; in de|garage ; na|garagem ; v|garáži
dining_room  : in the|dining room ; dans la|salle à manger/VERB ; im|esszimmer ; en el|comedor ; in|sala da pranzo ; in de|eetkamer ; na|sala de/ADP jantar/VERB ; v|jídelně
kids_room    : in the|nursery ; dans la|chambre des/ADP enfants ; im|kinderzimmer ; en el|cuarto de los niños ; nella|cameretta ; in de|kinderkamer ; no|quarto das/ADP crianças ; v|dětském/ADJ pokoji
basement     : in the|basement ; dans la|cave ; im|keller ; en el|sótano ; in|cantina ; in de|kelder ; na|cave ; ve|sklepě
attic        : in the|attic ; dans le|grenier ; auf dem|dachboden ; en el|desván ; in|soffitta ; op de|zolder ; no|sótão ; na|půdě
garden       : in the|garden ; dans le|jardin ; im|garten ; en el|jardín ; in|giardino ; in de|tuin ; no|jardim ; na|zahradě
balcony      : on the|balcony ; sur le|balcon ; auf dem|balkon ; en el|balcón ; sul|balcone ; op het|balkon ; na|varanda ; na|balkoně
guest_room   : in the|guest room ; dans la|chambre d'amis ; im|gästezimmer ; en la|habitación de invitados ; nella|camera degli/ADP ospiti ; in de|logeerkamer ; no|quarto de hóspedes ; v|pokoji pro hosty
laundry_room : in the|laundry room ; dans la|buanderie ; in der|waschküche ; en el|lavadero ; in|lavanderia ; in de|wasruimte ; na|lavandaria ; v|prádelně
toilet       : in the|toilet ; dans les|toilettes ; auf der|toilette ; en el|aseo ; nel|gabinetto ; op het|toilet ; no|lavabo ; na|záchodě
terrace      : on the|terrace ; sur la|terrasse ; auf der|terrasse ; en la|terraza ; in|terrazza ; op het|terras ; no|terraço ; na|terase
stairs       : on the|stairs ; dans l'|escalier ; im|treppenhaus ; en la|escalera ; sulle|scale ; op de|trap ; nas|escadas ; na|schodech
""")

# ---------------------------------------------------------------- taxi destinations ("to the airport")

PLACES = _table("""
airport       : to the|airport ; pour l'|aéroport ; zum|flughafen ; al|aeropuerto ; per l'|aeroporto ; naar het|vliegveld ; para o|aeroporto ; na|letiště
train_station : to the|train station ; pour la|gare ; zum|bahnhof ; a la|estación de tren ; per la|stazione ; naar het|station ; para a|estação de comboios ; na|nádraží
bus_station   : to the|bus station ; pour la|gare routière/ADJ ; zum|busbahnhof ; a la|estación de autobuses ; per la|stazione degli/ADP autobus ; naar het|busstation ; para a|estação de autocarros ; na|autobusové/ADJ nádraží
city_centre   : to the|city centre ; pour le|centre-ville ; ins|stadtzentrum ; al|centro ; per il|centro ; naar het|centrum ; para o|centro ; do|centra
hospital      : to the|hospital ; pour l'|hôpital ; ins|krankenhaus ; al|hospital ; per l'|ospedale ; naar het|ziekenhuis ; para o|hospital ; do|nemocnice
hotel         : to the|hotel ; pour l'|hôtel ; zum|hotel ; al|hotel ; per l'|albergo ; naar het|hotel ; para o|hotel ; do|hotelu
museum        : to the|museum ; pour le|musée ; ins|museum ; al|museo ; per il|museo ; naar het|museum ; para o|museu ; do|muzea
university    : to the|university ; pour l'|université ; zur|universität ; a la|universidad ; per l'|università ; naar de|universiteit ; para a|universidade ; na|univerzitu
beach         : to the|beach ; pour la|plage ; zum|strand ; a la|playa ; per la|spiaggia ; naar het|strand ; para a|praia ; na|pláž
harbour       : to the|harbour ; pour le|port ; zum|hafen ; al|puerto ; per il|porto ; naar de|haven ; para o|porto ; do|přístavu
stadium       : to the|stadium ; pour le|stade ; zum|stadion ; al|estadio ; per lo|stadio ; naar het|stadion ; para o|estádio ; na|stadion
cinema        : to the|cinema ; pour le|cinéma ; ins|kino ; al|cine ; per il|cinema ; naar de|bioscoop ; para o|cinema ; do|kina
theatre       : to the|theatre ; pour le|théâtre ; ins|theater ; al|teatro ; per il|teatro ; naar het|theater ; para o|teatro ; do|divadla
library       : to the|library ; pour la|bibliothèque ; zur|bibliothek ; a la|biblioteca ; per la|biblioteca ; naar de|bibliotheek ; para a|biblioteca ; do|knihovny
town_hall     : to the|town hall ; pour la|mairie ; zum|rathaus ; al|ayuntamiento ; per il|municipio ; naar het|stadhuis ; para a|câmara municipal/ADJ ; na|radnici
zoo           : to the|zoo ; pour le|zoo ; in den|zoo ; al|zoo ; per lo|zoo ; naar de|dierentuin ; para o|jardim zoológico/ADJ ; do|zoo
market        : to the|market ; pour le|marché ; zum|markt ; al|mercado ; per il|mercato ; naar de|markt ; para o|mercado ; na|trh
office        : to the|office ; pour le|bureau ; ins|büro ; a la|oficina ; per l'|ufficio ; naar het|kantoor ; para o|escritório ; do|kanceláře
""")

# ---------------------------------------------------------------- food (an indefinite object)

FOODS = _table("""
pizza         : a|pizza ; une|pizza ; eine|pizza ; una|pizza ; una|pizza ; een|pizza ; uma|piza ; pizzu
burger        : a|burger ; un|hamburger ; einen|hamburger ; una|hamburguesa ; un|hamburger ; een|hamburger ; um|hambúrguer ; hamburger
salad         : a|salad ; une|salade ; einen|salat ; una|ensalada ; un'|insalata ; een|salade ; uma|salada ; salát
soup          : some|soup ; une|soupe ; eine|suppe ; una|sopa ; una|zuppa ; een|soep ; uma|sopa ; polévku
sushi         : some|sushi ; des|sushis ; sushi ; sushi ; del|sushi ; sushi ; sushi ; sushi
pasta         : some|pasta ; des|pâtes ; nudeln ; pasta ; della|pasta ; pasta ; massa ; těstoviny
curry         : a|curry ; un|curry ; ein|curry ; un|curry ; un|curry ; een|curry ; um|caril ; kari
kebab         : a|kebab ; un|kebab ; einen|döner ; un|kebab ; un|kebab ; een|kebab ; um|kebab ; kebab
sandwich      : a|sandwich ; un|sandwich ; ein|sandwich ; un|bocadillo ; un|panino ; een|broodje ; uma|sandes ; sendvič
tacos         : some|tacos ; des|tacos ; tacos ; unos|tacos ; dei|tacos ; taco's ; tacos ; tacos
lasagna       : a|lasagna ; des|lasagnes ; eine|lasagne ; una|lasaña ; delle|lasagne ; lasagne ; uma|lasanha ; lasagne
paella        : a|paella ; une|paella ; eine|paella ; una|paella ; una|paella ; een|paella ; uma|paelha ; paellu
risotto       : a|risotto ; un|risotto ; ein|risotto ; un|risotto ; un|risotto ; een|risotto ; um|risoto ; rizoto
fries         : some|fries ; des|frites ; pommes ; unas|patatas fritas/ADJ ; delle|patatine fritte/ADJ ; friet ; batatas fritas/ADJ ; hranolky
ice_cream     : an|ice cream ; une|glace ; ein|eis ; un|helado ; un|gelato ; een|ijsje ; um|gelado ; zmrzlinu
omelette      : an|omelette ; une|omelette ; ein|omelett ; una|tortilla ; una|frittata ; een|omelet ; uma|omelete ; omeletu
noodles       : some|noodles ; des|nouilles ; gebratene/ADJ nudeln ; unos|fideos ; dei|noodles ; noedels ; massa chinesa/ADJ ; nudle
steak         : a|steak ; un|steak ; ein|steak ; un|filete ; una|bistecca ; een|biefstuk ; um|bife ; steak
falafel       : some|falafel ; des|falafels ; falafel ; falafel ; dei|falafel ; falafel ; falafel ; falafel
roast_chicken : a|roast chicken ; un|poulet rôti/ADJ ; ein|brathähnchen ; un|pollo asado/ADJ ; un|pollo arrosto/ADJ ; een|geroosterde/ADJ kip ; um|frango assado/ADJ ; pečené/ADJ kuře
quiche        : a|quiche ; une|quiche ; eine|quiche ; una|quiche ; una|quiche ; een|quiche ; uma|quiche ; quiche
""")

# ---------------------------------------------------------------- music

GENRES = _table("""
jazz       : some|jazz ; du|jazz ; jazz ; jazz ; jazz ; jazz ; jazz ; jazz
rock       : some|rock ; du|rock ; rockmusik ; rock ; rock ; rock ; rock ; rock
blues      : some|blues ; du|blues ; blues ; blues ; blues ; blues ; blues ; blues
reggae     : some|reggae ; du|reggae ; reggae ; reggae ; reggae ; reggae ; reggae ; reggae
classical  : some|classical/ADJ music ; de la|musique classique/ADJ ; klassische/ADJ musik ; música clásica/ADJ ; musica classica/ADJ ; klassieke/ADJ muziek ; música clássica/ADJ ; klasickou/ADJ hudbu
pop        : some|pop music ; de la|musique pop ; popmusik ; música pop ; musica pop ; popmuziek ; música pop ; pop
hip_hop    : some|hip hop ; du|hip-hop ; hip-hop ; hip hop ; hip hop ; hiphop ; hip hop ; hip hop
opera      : some|opera ; de l'|opéra ; oper ; ópera ; opera lirica/ADJ ; opera ; ópera ; operu
techno     : some|techno ; de la|techno ; techno ; techno ; techno ; techno ; techno ; techno
salsa      : some|salsa ; de la|salsa ; salsa ; salsa ; salsa ; salsa ; salsa ; salsu
folk       : some|folk music ; de la|musique folk ; volksmusik ; música folk ; musica folk ; volksmuziek ; música folk ; lidovou/ADJ hudbu
metal      : some|heavy/ADJ metal ; du|heavy/ADJ metal ; heavy/ADJ metal ; heavy/ADJ metal ; heavy/ADJ metal ; heavy/ADJ metal ; heavy/ADJ metal ; heavy/ADJ metal
country    : some|country music ; de la|musique country ; countrymusik ; música country ; musica country ; countrymuziek ; música country ; country
punk       : some|punk rock ; du|punk ; punkrock ; punk ; punk ; punk ; punk ; punk
soul       : some|soul music ; de la|soul ; soulmusik ; música soul ; musica soul ; soulmuziek ; música soul ; soul
electronic : some|electronic/ADJ music ; de la|musique électronique/ADJ ; elektronische/ADJ musik ; música electrónica/ADJ ; musica elettronica/ADJ ; elektronische/ADJ muziek ; música eletrónica/ADJ ; elektronickou/ADJ hudbu
christmas  : some|christmas music ; des|chants de noël/PROPN ; weihnachtslieder ; villancicos ; canzoni di natale/PROPN ; kerstmuziek ; música de natal/PROPN ; vánoční/ADJ koledy
flamenco   : some|flamenco ; du|flamenco ; flamenco ; flamenco ; flamenco ; flamenco ; flamenco ; flamenco
""")

# Composers: the names are nearly language-independent (which is fine: espeak says
# them with each language's rules); Czech needs the genitive after "od".
ARTISTS = _table("""
mozart      : mozart ; mozart ; mozart ; mozart ; mozart ; mozart ; mozart ; mozarta
beethoven   : beethoven ; beethoven ; beethoven ; beethoven ; beethoven ; beethoven ; beethoven ; beethovena
bach        : bach ; bach ; bach ; bach ; bach ; bach ; bach ; bacha
chopin      : chopin ; chopin ; chopin ; chopin ; chopin ; chopin ; chopin ; chopina
vivaldi     : vivaldi ; vivaldi ; vivaldi ; vivaldi ; vivaldi ; vivaldi ; vivaldi ; vivaldiho
verdi       : verdi ; verdi ; verdi ; verdi ; verdi ; verdi ; verdi ; verdiho
puccini     : puccini ; puccini ; puccini ; puccini ; puccini ; puccini ; puccini ; pucciniho
debussy     : debussy ; debussy ; debussy ; debussy ; debussy ; debussy ; debussy ; debussyho
ravel       : ravel ; ravel ; ravel ; ravel ; ravel ; ravel ; ravel ; ravela
schubert    : schubert ; schubert ; schubert ; schubert ; schubert ; schubert ; schubert ; schuberta
brahms      : brahms ; brahms ; brahms ; brahms ; brahms ; brahms ; brahms ; brahmse
haydn       : haydn ; haydn ; haydn ; haydn ; haydn ; haydn ; haydn ; haydna
liszt       : liszt ; liszt ; liszt ; liszt ; liszt ; liszt ; liszt ; liszta
dvorak      : dvorak ; dvořák ; dvořák ; dvorak ; dvořák ; dvořák ; dvorak ; dvořáka
smetana     : smetana ; smetana ; smetana ; smetana ; smetana ; smetana ; smetana ; smetany
grieg       : grieg ; grieg ; grieg ; grieg ; grieg ; grieg ; grieg ; griega
rossini     : rossini ; rossini ; rossini ; rossini ; rossini ; rossini ; rossini ; rossiniho
wagner      : wagner ; wagner ; wagner ; wagner ; wagner ; wagner ; wagner ; wagnera
mahler      : mahler ; mahler ; mahler ; mahler ; mahler ; mahler ; mahler ; mahlera
bizet       : bizet ; bizet ; bizet ; bizet ; bizet ; bizet ; bizet ; bizeta
satie       : satie ; satie ; satie ; satie ; satie ; satie ; satie ; satieho
handel      : handel ; haendel ; händel ; händel ; händel ; händel ; händel ; händela
strauss     : strauss ; strauss ; strauss ; strauss ; strauss ; strauss ; strauss ; strausse
mendelssohn : mendelssohn ; mendelssohn ; mendelssohn ; mendelssohn ; mendelssohn ; mendelssohn ; mendelssohn ; mendelssohna
schumann    : schumann ; schumann ; schumann ; schumann ; schumann ; schumann ; schumann ; schumanna
monteverdi  : monteverdi ; monteverdi ; monteverdi ; monteverdi ; monteverdi ; monteverdi ; monteverdi ; monteverdiho
purcell     : purcell ; purcell ; purcell ; purcell ; purcell ; purcell ; purcell ; purcella
elgar       : elgar ; elgar ; elgar ; elgar ; elgar ; elgar ; elgar ; elgara
sibelius    : sibelius ; sibelius ; sibelius ; sibelius ; sibelius ; sibelius ; sibelius ; sibelia
janacek     : janacek ; janáček ; janáček ; janacek ; janáček ; janáček ; janacek ; janáčka
""")

# "something *by* mozart"
_BY = {"en": "by", "fr": "de", "de": "von", "es": "de", "it": "di", "nl": "van", "pt": "de", "cs": "od"}


def _artist(value: str, lang: str, form: str) -> str:
    name = ARTISTS[value][_column(lang)]
    prep = _BY[lang]
    if lang == "fr" and name[0] in "aeiouéè":
        prep = "d'"
    return f"{prep}|{name}"


# ---------------------------------------------------------------- numeric slots

TIMES = tuple(f"{h:02d}:{m:02d}" for h in range(1, 13) for m in range(0, 60, 5))
# Timer lengths: every minute up to 20 then steps of five, some seconds, a few hours.
DURATIONS = (
    tuple(f"{n}min" for n in [*range(1, 21), *range(25, 60, 5)])
    + tuple(f"{n}s" for n in (10, 15, 20, 30, 40, 45, 50))
    + tuple(f"{n}h" for n in range(1, 7))
)
PARTY_SIZES = tuple(str(n) for n in range(2, 13))


def _split_duration(value: str) -> tuple[int, str]:
    digits = value.rstrip("minsh")
    return int(digits), value[len(digits):]


# ---------------------------------------------------------------- registry


def _table_phrase(table: dict[str, tuple[str, ...]]) -> Callable[[str, str, str], str]:
    return lambda value, lang, form: table[value][_column(lang)]


# slot type -> (value ids, default POS of value words, renderer to notation or a SlotPhrase)
SLOT_TYPES: dict[str, tuple[tuple[str, ...], str, Callable[[str, str, str], str | SlotPhrase]]] = {
    "time": (TIMES, "NUM", lambda v, lang, form: numbers.clock_time(lang, int(v[:2]), int(v[3:]))),
    "duration": (DURATIONS, "NUM", lambda v, lang, form: numbers.duration(lang, *_split_duration(v))),
    "party_size": (PARTY_SIZES, "NUM", lambda v, lang, form: numbers.people(lang, int(v))),
    "city": (tuple(CITIES), "PROPN", _city),
    "person": (tuple(PERSONS), "PROPN", _person),
    "day": (tuple(DAYS), "NOUN", _table_phrase(DAYS)),
    "room": (tuple(ROOMS), "NOUN", _table_phrase(ROOMS)),
    "place": (tuple(PLACES), "NOUN", _table_phrase(PLACES)),
    "food": (tuple(FOODS), "NOUN", _table_phrase(FOODS)),
    "genre": (tuple(GENRES), "NOUN", _table_phrase(GENRES)),
    "artist": (tuple(ARTISTS), "PROPN", _artist),
}

# Forms a template may ask for, per slot type (the first is the default).
SLOT_FORMS = {"city": ("in", "to"), "person": ("call", "to")}


def slot_values(slot_type: str) -> tuple[str, ...]:
    return SLOT_TYPES[slot_type][0]


def render_slot(slot_type: str, value: str, lang: str, form: str = "") -> SlotPhrase:
    """The phrase for concept ``value`` of ``slot_type`` in ``lang``."""
    _, default_pos, render = SLOT_TYPES[slot_type]
    form = form or SLOT_FORMS.get(slot_type, ("",))[0]
    out = render(value, lang, form)
    if isinstance(out, SlotPhrase):
        return out
    return slot_phrase(out, LEXICON[lang], default_pos)


__all__ = ["LANGUAGES", "SLOT_FORMS", "SLOT_TYPES", "SlotPhrase", "Token", "render_slot", "slot_values"]
